#!/bin/bash
# Device-side entry for every call after preflight.sh: unpack part B if it travelled, make sure a
# vLLM server of the wanted model is up (started with setsid, so it outlives this call while the
# machine stays warm), run one series of series.py, and pack /tmp/res into $OUT/results.tgz.
#   bash bench/real-vllm/serve.sh vl|text|q32 PLAN SECONDS
# The server keeps running after the call: the next call (within the machine's 30 s warm window)
# reuses it without a cold start. A server of the other model is stopped first.
set -u
KIND=$1; PLAN=$2; SECS=$3
HERE=$(cd "$(dirname "$0")" && pwd)
SITE=${SITE:-/tmp/site}; OUT=${OUT:-/tmp/out}; RES=${RES:-/tmp/res}; mkdir -p $SITE $OUT $RES
T0=$(date +%s); DEADLINE=$(( T0 + SECS ))
el() { echo $(( $(date +%s) - T0 )); }
pack() { tar czf $OUT/results.tgz -C $RES . 2>/dev/null; true; }
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1
export VLLM_USE_FLASHINFER_SAMPLER=0   # flashinfer is not carried
[ -s $SITE/vllm/_C_stable_libtorch.abi3.so ] || { echo "part A missing: the machine was not kept warm"; exit 9; }
if [ -f .whlB/partB.tar.xz ] && [ ! -f $SITE/.partB_done ]; then
  python3 -c "import tarfile,sys;tarfile.open(sys.argv[1],'r:xz').extractall(sys.argv[2],filter='fully_trusted')" .whlB/partB.tar.xz $SITE || exit 8
  touch $SITE/.partB_done
fi
[ -f $SITE/.partB_done ] || { echo "part B missing"; exit 9; }
echo "[$(el)s] unpacked"
healthy() { python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health',timeout=2)" >/dev/null 2>&1; }

case $KIND in
  vl)  SRC=$HERE/model/Qwen2.5-VL-7B-Instruct; NAME=Qwen/Qwen2.5-VL-7B-Instruct ;;
  q32) SRC=$HERE/model/Qwen3-32B; NAME=Qwen/Qwen3-32B ;;   # a larger model no constant was fitted on
  *)   SRC=$HERE/model/Qwen2.5-7B-Instruct; NAME=Qwen/Qwen2.5-7B-Instruct ;;
esac
MD=/tmp/model_$KIND; mkdir -p $MD; cp $SRC/*.json $MD/
[ -s $MD/tokenizer.json ] || python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
   $HERE/model/Qwen2.5-VL-7B-Instruct/tokenizer.json.xz $MD/tokenizer.json

SERVE_ARGS="--served-model-name $NAME --load-format dummy --max-model-len 16384 --port 8000 --seed 0"
[ "$KIND" = vl ] && SERVE_ARGS="$SERVE_ARGS --limit-mm-per-prompt {\"image\":1,\"video\":0}"
# API_SERVERS=N serves with --api-server-count N (vLLM's default is 1); it is part of the server's identity.
API_SERVERS=${API_SERVERS:-1}
[ "$API_SERVERS" != 1 ] && SERVE_ARGS="$SERVE_ARGS --api-server-count $API_SERVERS"
IDENT=$KIND-api$API_SERVERS
# SPEC='<JSON>' serves with --speculative-config '<JSON>' (part of the server's identity too).
if [ -n "${SPEC:-}" ]; then SERVE_ARGS="$SERVE_ARGS --speculative-config $SPEC"; IDENT="$IDENT-spec$(echo "$SPEC" | md5sum | cut -c1-8)"; fi
RUNNING=$(cat /tmp/server_kind 2>/dev/null)
if [ "$RUNNING" != "$IDENT" ] || ! healthy; then
  if [ -f /tmp/server_pid ]; then kill -- -$(cat /tmp/server_pid) 2>/dev/null; sleep 5; kill -9 -- -$(cat /tmp/server_pid) 2>/dev/null; sleep 2; fi
  echo "[$(el)s] serve $MD $SERVE_ARGS"
  echo "python3 -m vllm.entrypoints.cli.main serve $MD $SERVE_ARGS" > $RES/serve_cmd_$KIND.txt
  setsid python3 -m vllm.entrypoints.cli.main serve $MD $SERVE_ARGS > $RES/server_$KIND.log 2>&1 &
  SPID=$!; echo $SPID > /tmp/server_pid; echo $IDENT > /tmp/server_kind
  while [ $(date +%s) -lt $(( DEADLINE - 30 )) ]; do
    healthy && break
    kill -0 $SPID 2>/dev/null || { echo "[$(el)s] SERVER DIED"; pack; tail -60 $RES/server_$KIND.log | cut -c1-300; exit 3; }
    sleep 1
  done
  healthy || { echo "[$(el)s] not healthy in time"; pack; tail -40 $RES/server_$KIND.log | cut -c1-300; exit 4; }
  echo "[$(el)s] server healthy"
  grep -iE "KV cache|concurrency|max_num_seqs|max_num_batched|chunked|graph|backend|Model loading|memory|profil|encoder" $RES/server_$KIND.log | cut -c1-240 | head -40
fi
# PREPROC=1: time the API server's image work (decode, HF processor) on this host's CPU before the series
if [ "${PREPROC:-0}" = 1 ] && [ "$KIND" = vl ] && [ ! -f $RES/preproc.json ]; then
  echo "[$(el)s] preproc"; python3 $HERE/preproc.py $MD $RES/preproc.json > $RES/preproc.log 2>&1; tail -3 $RES/preproc.log | cut -c1-300
fi
# provenance of this call
{ echo "date_utc: $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
  python3 -c "import vllm,torch,transformers;print('vllm',vllm.__version__,'torch',torch.__version__,'cuda',torch.version.cuda,'transformers',transformers.__version__)"
  lscpu | grep -E "Model name|^CPU\(s\)"; sha256sum $HERE/*.sh $HERE/*.py; } > $RES/provenance_${KIND}_${PLAN}.txt 2>&1
cp $RES/serve_cmd_$KIND.txt $RES/serve_cmd_${KIND}_${PLAN}.txt 2>/dev/null
pack
python3 $HERE/series.py $PLAN --deadline $DEADLINE --res $RES --out $OUT --server-pid $(cat /tmp/server_pid) \
   --model $NAME --model-dir $MD --seed-base $(( 1000 + $(ls $RES/*.run.json 2>/dev/null | wc -l) * 7 + RANDOM % 1000 )) ${ONLY:+--only $ONLY}
cp $RES/server_$KIND.log $RES/server_${KIND}_after_${PLAN}.log 2>/dev/null
pack; ls -la $OUT; echo "[$(el)s] done"
