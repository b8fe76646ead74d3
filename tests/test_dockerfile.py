"""The Dockerfile cannot be built here (no Docker, no registry): check what can be checked."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(name):
  with open(os.path.join(ROOT, name)) as f:
    return f.read()


def test_base_image_matches_the_pinned_tensorflow_and_sources_exist():
  dockerfile = _read("Dockerfile")
  base = re.search(r"^FROM tensorflow/tensorflow:(\d+\.\d+)\.\d+-gpu$", dockerfile, re.M)
  pinned = re.search(r"^tensorflow==(\d+\.\d+)\.\d+$", _read("constraints.txt"), re.M)
  assert base and pinned and base.group(1) == pinned.group(1)
  for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
    for source in line.split()[:-1]:
      assert os.path.exists(os.path.join(ROOT, source)), source
  assert 'ENTRYPOINT ["python", "-m", "tfdp.train"]' in dockerfile
  assert "-c constraints.txt" in dockerfile
