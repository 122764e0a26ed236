"""gtasr-train: reproduce GTASR on an image folder (Stage I, Stage II), resume, evaluate."""
