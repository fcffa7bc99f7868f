"""Using trained models: scores written out for an analysis (:mod:`.predict`) and ONNX export (:mod:`.export`)."""
