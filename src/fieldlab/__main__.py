"""`python -m fieldlab …` (what `torchrun -m fieldlab fit-dataset …` runs on every rank)."""

from fieldlab.cli import main

if __name__ == "__main__":
    main()
