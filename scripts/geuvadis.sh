#!/usr/bin/env bash
# Fetch the real data the tutorial uses, from Debian's archive, into DIR (default ./geuvadis):
#   qtltools-example: 358 GEUVADIS Europeans, 608 chr22 genes (QTLtools BED), phased 1000 Genomes
#                     SNPs (GRCh37) and 50 covariates (whitespace-separated, QTLtools layout);
#   hisat2:           22_20-21M.fa, GRCh37 chr22:20,000,001-21,000,000 (record `22:20000001-21000000`).
# The files are extracted as shipped; `hapexpr prepare` reads them unchanged.
# Needs apt-get (Debian/Ubuntu) and network access; nothing else is downloaded.
set -euo pipefail
dir="${1:-geuvadis}"
mkdir -p "$dir/debs" "$dir/x"
cd "$dir"
( cd debs && apt-get download qtltools-example hisat2 )
for deb in debs/*.deb; do dpkg-deb -x "$deb" x; done
tar -xJf x/usr/share/doc/qtltools/examples/examples.tar.xz
cp x/usr/share/doc/hisat2/examples/reference/22_20-21M.fa .
ls -l genotypes.chr22.vcf.gz genes.50percent.chr22.bed.gz genes.simulated.chr22.bed.gz \
      genes.covariates.pc50.txt.gz 22_20-21M.fa
