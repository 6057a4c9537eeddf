"""The engine: the pure planner, the executors that walk the DAG, the content-addressed cache."""
