"""The test tree's own layout: what would stop pytest from collecting the suite at all."""

from collections import Counter
from pathlib import Path


def test_test_modules_have_unique_names():
    """Test folders have no __init__.py, so pytest imports each test module by its bare name: two
    test_x.py in different folders stop the whole collection with "import file mismatch"."""
    names = Counter(path.name for path in Path(__file__).parent.rglob("test_*.py"))
    assert not [name for name, count in names.items() if count > 1]
