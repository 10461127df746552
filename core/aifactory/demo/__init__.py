"""The main job: the whole chain on real NEON aerial imagery (``aifactory demo`` / ``make demo``)."""
