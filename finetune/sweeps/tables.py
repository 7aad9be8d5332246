"""The tables a sweep writes: which columns a leaderboard has, and how a row looks in Markdown."""

from typing import Any, Dict, List

FIRST_COLUMNS = ["job", "overrides", "task", "metric", "score"]  # score: the job's validation value of its metric
LAST_COLUMNS = ["train_time_s", "status", "error", "run_folder"]


def columns_of(rows: List[Dict[str, Any]]) -> List[str]:
    """The fixed columns, with each score column any job has in between (validation first, then test)."""
    fixed = set(FIRST_COLUMNS + LAST_COLUMNS + ["predictions", "task_score"])
    scores = list(dict.fromkeys(k for row in rows for k in row if k not in fixed))
    scores.sort(key=lambda k: not k.startswith("val_"))  # stable: each job's own order within
    return FIRST_COLUMNS + scores + LAST_COLUMNS


def markdown_table(rows: List[Dict[str, Any]], columns: List[str]) -> str:
    """``rows`` as a Markdown table of ``columns``: floats to 4 decimals, pipes escaped."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.4f}" if isinstance(value, float) else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
