"""Training and evaluation of ALAC models (never imported by the serving path).

Speech synthesis of captions (:mod:`rsia_geo.training.voices`), image-voice datasets, the
training loop and retrieval metrics live here, as open_clip keeps ``open_clip_train`` apart.
"""
