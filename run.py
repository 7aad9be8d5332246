"""Fine-tune a transformer encoder on a text classification task (from a checkout; installed: finetune-train).

python run.py task=ag_news model=deberta
python run.py -m model=bert,roberta,distilbert

The entry is finetune/run.py's, shared with the finetune-train command and python -m finetune.run.
"""

from finetune.run import main

if __name__ == "__main__":
    main()
