"""Where the repository and the shared reference folder (a sibling of the checkout) live."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
