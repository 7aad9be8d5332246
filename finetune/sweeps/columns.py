"""The columns of a sweep's leaderboard, in the order its tables show them."""

from typing import Any, Dict, List

from finetune.markdown import markdown_table

# score: the job's validation value of its metric; learned: above the trivial baseline (yes / NO)
FIRST_COLUMNS = ["job", "overrides", "task", "metric", "score", "learned"]
LAST_COLUMNS = ["train_time_s", "status", "error", "run_folder"]


def columns_of(rows: List[Dict[str, Any]]) -> List[str]:
    """The fixed columns, with each score column any job has in between (validation first, then test)."""
    fixed = set(FIRST_COLUMNS + LAST_COLUMNS + ["predictions", "task_score"])
    scores = list(dict.fromkeys(k for row in rows for k in row if k not in fixed))
    scores.sort(key=lambda k: not k.startswith("val_"))  # stable: each job's own order within
    return FIRST_COLUMNS + scores + LAST_COLUMNS


def table_text(rows: List[Dict[str, Any]], columns: List[str]) -> str:
    """``rows`` (one dict each) as a Markdown table of ``columns``."""
    return "\n".join(markdown_table(columns, [[row.get(c) for c in columns] for row in rows]))
