#!/usr/bin/env bash
# `make rules-test`: promtool check + unit tests of every alert rule file, the compose
# Prometheus config, and the PrometheusRule of the kustomize base (same rules, generated).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT/deploy/prometheus"
apt_install promtool prometheus
log "promtool: $(promtool --version 2>&1 | head -1)"
promtool check rules rules/*.rules.yaml
promtool test rules rules/*_tests.yaml
# The compose config (its rule_files glob points into the container; checked on its own).
promtool check config --syntax-only prometheus.yml 2>/dev/null || promtool check config prometheus.yml
n_rules=$(ls rules/*.rules.yaml | wc -l)
n_tests=$(ls rules/*_tests.yaml | wc -l)
for f in rules/*.rules.yaml; do
    t="rules/$(basename "$f" .rules.yaml)_tests.yaml"
    [ -f "$t" ] || die "$f has no unit test file $t"
done
alerts=$(grep -h '^ *- alert:' rules/*.rules.yaml | wc -l)
log "rules: $n_rules files, $alerts alert rules, $n_tests test files: all checked and passed"
[ "$alerts" -ge 8 ] || die "fewer than 8 alert rules"
