#!/usr/bin/env bash
# `make k8s-validate`: render both overlays with kustomize (kubectl kustomize), validate every
# object against the Kubernetes JSON schemas offline and strictly (kubernetes-validate, pinned,
# run through uvx), check the PrometheusRule's rules with promtool, and the generated files
# are up to date. Structural checks (probes, securityContext, selectors, ports, NetworkPolicy
# flows) are in tests/deploy/test_k8s.py.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_ROOT"
KV_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"
UV="$(command -v uv || echo "python3 -m uv")"

command -v kubectl >/dev/null 2>&1 || die "kubectl not found (it renders the kustomizations: \
install kubectl >= 1.27, e.g. Debian's kubernetes-client is too old)"
apt_install promtool prometheus
out="$(mktemp -d /tmp/arb-k8s.XXXXXX)"
trap 'rm -rf "$out"' EXIT

$UV run python deploy/k8s/generate.py --check
for overlay in staging prod; do
    kubectl kustomize "deploy/k8s/overlays/$overlay" > "$out/$overlay.yaml"
    n=$(grep -c '^kind:' "$out/$overlay.yaml")
    for v in $K8S_VERSIONS; do
        # --strict: unknown fields are errors. CRD kinds (ServiceMonitor, PrometheusRule) have
        # no bundled schema: a warning here, checked below and in tests/deploy.
        $UV tool run --from "kubernetes-validate==$KV_VERSION" kubernetes-validate \
            --strict --quiet --no-warn -k "$v" "$out/$overlay.yaml" \
            || die "$overlay: schema validation against Kubernetes $v failed"
    done
    log "$overlay: $n objects valid against Kubernetes $K8S_VERSIONS (strict)"
    # The PrometheusRule's groups, as a rule file, through promtool.
    $UV run python - "$out/$overlay.yaml" "$out/$overlay-rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"
yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, open(sys.argv[2], "w"))
PY
    promtool check rules "$out/$overlay-rules.yaml" >/dev/null \
        || die "$overlay: the PrometheusRule does not pass promtool check rules"
    log "$overlay: PrometheusRule passes promtool check rules"
done
