#!/usr/bin/env bash
# The real-data tutorial (docs/tutorial-geuvadis.md) start to finish, on the CPU:
#
#   scripts/tutorial-geuvadis.sh [DATA_DIR] [WORK_DIR]
#
# DATA_DIR (default ./geuvadis) holds the files of Debian's qtltools-example and hisat2 packages;
# when they are missing, scripts/geuvadis.sh fetches them (apt-get download + dpkg-deb, ~17 MB).
# WORK_DIR (default DATA_DIR/tutorial) receives two studies:
#   cis/  genotype-only: all 608 chr22 genes, elastic net at +-1 Mb, evaluate, final fit on
#         everyone, PredictDB export;
#   seq/  the genes whose 6 kb window lies in the FASTA excerpt chr22:20-21 Mb (~26): tiny NT and
#         kmer:4 embeddings, every method, evaluate, report.
# and stage_times.tsv (stage, seconds). Every stage resumes: rerun the same command after a kill.
# STUDIES (default "cis seq") picks the parts to run (two shells may run one each).
# STACK=0 leaves out the stack: it refits every base 25 times per gene (nested 5-fold), about 5x
# the summed fit times of its bases (fit prints its estimate first). STACK_BASES (default: every
# per-gene fit but nt-transformer, whose 25 refits per gene would dominate: 231 min estimated on
# a busy 2-core VM with it) picks the bases.
# JOBS (default 2) genes are fitted in parallel by the 608-gene elastic net. HAPEXPR (default
# `hapexpr`) is the command run, e.g. HAPEXPR="python -m hapexpr.cli" from a checkout.
#
# The tiny models (NT and Enformer) are RANDOMLY INITIALISED: their numbers show the pipeline
# working, not what real weights achieve. The elastic net and the k-mer probe need no weights.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-geuvadis}"
work="${2:-$data/tutorial}"
jobs="${JOBS:-2}"
stack_bases="${STACK_BASES:-elastic-net,elastic-net-window,ridge-probe,ridge-probe-kmer,enformer,enformer-ridge}"
studies=" ${STUDIES:-cis seq} "
read -r -a hx <<< "${HAPEXPR:-hapexpr}"

shipped=(genotypes.chr22.vcf.gz genes.50percent.chr22.bed.gz genes.covariates.pc50.txt.gz
         22_20-21M.fa)
for f in "${shipped[@]}"; do
    if [[ ! -s "$data/$f" ]]; then bash "$here/scripts/geuvadis.sh" "$data"; break; fi
done
mkdir -p "$work"
times="$work/stage_times.tsv"
[[ -s "$times" ]] || printf 'stage\tseconds\n' > "$times"

# stage NAME COMMAND...: run it, print and record its wall time.
stage() {
    local name="$1"; shift
    echo; echo "== $name: ${*}"
    local t0; t0=$(date +%s.%N)
    "$@"
    local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    printf '%s\t%.1f\n' "$name" "$dt" >> "$times"
    printf '== %s took %.1f s\n' "$name" "$dt"
}

inputs=(--vcf "$data/genotypes.chr22.vcf.gz"
        --expression "$data/genes.50percent.chr22.bed.gz"
        --covariates "$data/genes.covariates.pc50.txt.gz"
        --normalise inverse-normal)

# 1. Genotype-only study of all genes: the PrediXcan-style elastic net, +-1 Mb of each TSS.
cis="$work/cis"
if [[ "$studies" == *" cis "* ]]; then
[[ -s "$cis/study.json" ]] || stage cis.prepare "${hx[@]}" prepare "${inputs[@]}" --out "$cis"
stage cis.fit.elastic-net "${hx[@]}" fit "$cis" --method elastic-net --jobs "$jobs"
stage cis.evaluate "${hx[@]}" evaluate "$cis"
stage cis.fit-final.elastic-net "${hx[@]}" fit-final "$cis" --method elastic-net --jobs "$jobs"
# reads the study's fit and fit-final (same options): no refitting
[[ -s "$work/geuvadis-chr22.db" ]] ||
    stage cis.export-predictdb "${hx[@]}" export-predictdb "$cis" --out "$work/geuvadis-chr22.db"
fi

# 2. Sequence study: the genes whose window the FASTA excerpt covers.
seq="$work/seq"
if [[ "$studies" == *" seq "* ]]; then
[[ -s "$seq/study.json" ]] ||
    stage seq.prepare "${hx[@]}" prepare "${inputs[@]}" --fasta "$data/22_20-21M.fa" \
        --window 6000 --out "$seq"
stage seq.embed.tiny "${hx[@]}" embed "$seq" --model tiny
stage seq.embed.kmer4 "${hx[@]}" embed "$seq" --model kmer:4
fits=(
    "elastic-net|--method elastic-net"
    "elastic-net-window|--method elastic-net --cis-window 0"
    "ridge-probe|--method ridge-probe --fingerprint tiny"
    "ridge-probe-kmer|--method ridge-probe --fingerprint kmer:4 --name ridge-probe-kmer"
    "nt-transformer|--method nt-transformer --fingerprint tiny"
    "enformer|--method enformer"
    "enformer-ridge|--method enformer --head ridge"
)
[[ "${STACK:-1}" == 0 ]] || fits+=("stack|--method stack --base $stack_bases")
for entry in "${fits[@]}"; do
    name="${entry%%|*}"
    read -r -a opts <<< "${entry#*|}"
    stage "seq.fit.$name" "${hx[@]}" fit "$seq" "${opts[@]}"
done
stage seq.evaluate "${hx[@]}" evaluate "$seq"
stage seq.report "${hx[@]}" report "$seq" --overwrite
fi

echo
echo "stage times (s):"; column -t "$times"
echo "cis study: $cis/metrics.tsv; PredictDB: $work/geuvadis-chr22.db"
echo "sequence study: $seq/metrics.tsv; report: $seq/report/index.html"
