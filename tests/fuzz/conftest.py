import sys
from pathlib import Path

# The fuzz targets share `_fuzzing.py` (settings, mutations, the property); make it importable.
sys.path.insert(0, str(Path(__file__).parent))
