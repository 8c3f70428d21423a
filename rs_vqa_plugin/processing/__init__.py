"""Processing toolbox: the rs_vqa provider and its algorithms (ask, evaluate, build pyramid)."""
