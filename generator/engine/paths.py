"""Where things live in an SMT checkout (names only; importing this costs nothing)."""

TEMPLATE_DIR = "template_repo"
TECHNIQUES_DIR = "techniques"
LOCAL_TECHNIQUES_DIR = "local_techniques"  # inside a model's folder, next to its spec
