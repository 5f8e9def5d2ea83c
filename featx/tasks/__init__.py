"""What users do with a backbone: detection helpers, export, and feature extraction over image folders."""
