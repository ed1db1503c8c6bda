"""What users write: scenario and matrix files, their fields, and time compression."""
