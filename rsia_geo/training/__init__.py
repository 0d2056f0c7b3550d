"""Training and evaluation of ALAC models (never imported by the serving path).

Modules, in the order data flows through them:

* :mod:`~rsia_geo.training.synthesis`: offline speech engines and voices (``speak``,
  ``synthesize``, the training / held-out voice catalogue);
* :mod:`~rsia_geo.training.dataset`: captions -> voiced clips and ``manifest.jsonl``
  (``voice_captions``), and reading manifests back;
* :mod:`~rsia_geo.training.published`: the published image-voice sets' folders (UCM IV, ...)
  as manifests;
* :mod:`~rsia_geo.training.augment` (recording conditions) and
  :mod:`~rsia_geo.training.scenes` (scene mixing): what training does to clips and images;
* :mod:`~rsia_geo.training.train`: the training loop; :mod:`~rsia_geo.training.evaluate` and
  :mod:`~rsia_geo.training.metrics`: retrieval metrics.

They live apart from the library, as open_clip keeps ``open_clip_train`` apart.
"""
