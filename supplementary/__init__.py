"""Data the project ships: face-model numbers and the sample subject."""
