"""Who is in the picture and what they say: everything per person, before the model.

- :mod:`.audio`: one track as mono 16 kHz samples (files, waveforms, resampling, normalisation);
- :mod:`.audio_features`: wav2vec2 features of one track, exactly as the reference computes them (long tracks in
  chunks), kept per frame in an :mod:`.audio_store`; :mod:`.wav2vec2_files` reads the encoder's weights;
- :mod:`.speakers`: every person's track on the clip's timeline (``pad`` / ``concat``, offsets, listeners);
- :mod:`.faces`: face detection (one square box per person, left to right), its backends in :mod:`.face_detectors`;
- :mod:`.masks`: the reference's face-mask geometry (square box, widening, token masks, ``y`` mask channels);
- :mod:`.routing`: faces (found, boxes or painted masks) -> a :class:`~.routing.Routing` of voices to faces (a
  painted mask of several people split by :mod:`.regions`);
- :mod:`.preview`: a picture of who drives which face.
"""
