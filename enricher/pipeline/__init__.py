"""Jobs from stored notifications to delivered pages: stages, workers, deadlines."""
