"""repbench's own learner plugins (installed as `repbench_models`), registered through entry points."""
