"""What a run leaves behind: its output folder (the one writer), usage accounting, report.md, review.html
and MLflow tracking."""
