"""Evaluation: pixel and object metrics, COCO mAP, PR curves, RPS operating-point sweeps, reports, runs."""
