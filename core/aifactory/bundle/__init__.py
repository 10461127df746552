"""Deployable model bundles: ONNX export verified against torch, ``bundle.json``, a Docker build context,
and the torch-free predictor that runs a bundle in ONNX Runtime.

- :mod:`.format`: the zip layout and ``bundle.json`` (no torch);
- :mod:`.export`: torch → ONNX with a dynamic batch axis, checked against torch on random and real tiles;
- :mod:`.build`: ``build_bundle(run_dir, out, ...)``, what ``aifactory bundle`` runs;
- :mod:`.docker`: Dockerfile, entrypoint and requirements of the deployment image;
- :mod:`.runtime`: :class:`~aifactory.bundle.runtime.OnnxModel`, the prediction stage's ONNX model source.

Imports from other stages: models (cards, rebuilding the network), prediction (the model-source
contract and its defaults), evaluation (the operating point's chain), postprocess (validating chains).
Importing this package imports nothing heavy.
"""
