# Sourced by the scripts run on a lent GPU machine (gpu_check.sh, gpu_bench.sh): the
# Python packages its image lacks, carried as wheels in .whl/ and installed into
# /tmp/site once a machine (the stamp names the wheels installed, so changed wheels
# install again), on PYTHONPATH with this checkout.
stamp="$(ls .whl | md5sum | cut -c1-32)"
[ "$(cat /tmp/site/.wheels 2>/dev/null)" = "$stamp" ] || { python3 -m pip install -q \
  --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && echo "$stamp" > /tmp/site/.wheels; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
