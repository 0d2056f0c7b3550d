"""A microphone recorder widget for Jupyter (anywidget): speak the query in the notebook.

The browser records from the microphone with the Web Audio API, resamples to 16 kHz mono and
encodes a 16-bit PCM WAV itself (MediaRecorder would give WebM/Opus, which is not among the
audio formats rsia_geo decodes), then hands the bytes to Python through the widget's ``wav``
trait. Works with ipywidgets 8 in JupyterLab 4, Notebook 7 and Voila.
"""

from __future__ import annotations

from typing import Any

from rsia_geo._lazy import lazy_import

__all__ = ["MicRecorder"]

_ESM = r"""
function encodeWav(chunks, rate, target) {
  let n = 0;
  for (const c of chunks) n += c.length;
  const all = new Float32Array(n);
  let o = 0;
  for (const c of chunks) { all.set(c, o); o += c.length; }
  const m = Math.max(1, Math.floor(n * target / rate));
  const pcm = new Int16Array(m);
  const step = rate / target;
  for (let i = 0; i < m; i++) {  // average the source samples of each output sample
    const a = Math.floor(i * step), b = Math.max(a + 1, Math.floor((i + 1) * step));
    let s = 0;
    for (let j = a; j < b && j < n; j++) s += all[j];
    const v = Math.max(-1, Math.min(1, s / (b - a)));
    pcm[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
  }
  const buf = new ArrayBuffer(44 + pcm.length * 2);
  const d = new DataView(buf);
  const text = (off, s) => {
    for (let i = 0; i < s.length; i++) d.setUint8(off + i, s.charCodeAt(i));
  };
  text(0, "RIFF"); d.setUint32(4, 36 + pcm.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); d.setUint32(16, 16, true); d.setUint16(20, 1, true); d.setUint16(22, 1, true);
  d.setUint32(24, target, true); d.setUint32(28, target * 2, true); d.setUint16(32, 2, true);
  d.setUint16(34, 16, true); text(36, "data"); d.setUint32(40, pcm.length * 2, true);
  new Int16Array(buf, 44).set(pcm);
  return buf;
}

export default {
  render({ model, el }) {
    const button = document.createElement("button");
    button.className = "rsia-record jupyter-button";
    const status = document.createElement("span");
    status.className = "rsia-record-status";
    status.style.marginLeft = "8px";
    el.append(button, status);
    let stream = null, ctx = null, source = null, node = null, chunks = [], rate = 48000;
    let timer = null, started = 0;
    const idle = () => { button.textContent = "\u25cf Record"; button.disabled = false; };
    idle();
    async function start() {
      button.disabled = true;
      try {
        stream = await navigator.mediaDevices.getUserMedia(
          { audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false } });
      } catch (err) {
        status.textContent = "microphone unavailable: " + err.message;
        model.set("error", String(err.message)); model.save_changes(); idle();
        return;
      }
      ctx = new AudioContext();
      rate = ctx.sampleRate;
      source = ctx.createMediaStreamSource(stream);
      node = ctx.createScriptProcessor(4096, 1, 1);
      chunks = [];
      node.onaudioprocess = (e) => chunks.push(new Float32Array(e.inputBuffer.getChannelData(0)));
      source.connect(node); node.connect(ctx.destination);
      started = performance.now();
      button.textContent = "\u25a0 Stop"; button.disabled = false;
      status.textContent = "recording... (speak, then Stop)";
      model.set("recording", true); model.set("error", ""); model.save_changes();
      timer = setTimeout(stop, 1000 * model.get("max_seconds"));
    }
    async function stop() {
      if (!model.get("recording")) return;
      clearTimeout(timer);
      node.disconnect(); source.disconnect();
      stream.getTracks().forEach((t) => t.stop());
      await ctx.close();
      const wav = encodeWav(chunks, rate, model.get("sample_rate"));
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      model.set("wav", new DataView(wav));
      model.set("recording", false);
      model.save_changes();
      status.textContent = `recorded ${seconds} s`;
      idle();
    }
    button.addEventListener("click", () => (model.get("recording") ? stop() : start()));
  },
};
"""

_CLASS: Any = None


def _to_bytes(value: Any, _widget: Any) -> bytes:
    return bytes(value) if value is not None else b""


def MicRecorder(**kwargs: Any) -> Any:  # a widget class, defined on first use
    """A *Record* / *Stop* button that records the microphone into a WAV (16 kHz mono).

    Args:
        **kwargs: Trait values: ``max_seconds`` (default 15, recording stops by itself),
            ``sample_rate`` (default 16000).

    Returns:
        The widget; its ``wav`` trait holds the last recording (bytes), ``error`` why the
        microphone could not be used (the browser refused, no device).

    Raises:
        DependencyNotFoundError: anywidget is not installed (``pip install 'rsia_geo[notebook]'``).
    """
    global _CLASS
    if _CLASS is None:
        anywidget = lazy_import("anywidget")
        traitlets = lazy_import("traitlets")

        class _MicRecorder(anywidget.AnyWidget):  # type: ignore[misc,name-defined]
            _esm = _ESM
            # the browser sends a binary buffer, which arrives as a memoryview
            wav = traitlets.Bytes(b"").tag(sync=True, from_json=_to_bytes)
            recording = traitlets.Bool(False).tag(sync=True)
            error = traitlets.Unicode("").tag(sync=True)
            max_seconds = traitlets.Float(15.0).tag(sync=True)
            sample_rate = traitlets.Int(16000).tag(sync=True)

        _CLASS = _MicRecorder
    return _CLASS(**kwargs)
