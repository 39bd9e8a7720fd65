# The cluster PKI of e2e/control-plane.sh (sourced by it): CAs, serving and client certificates (openssl) and the
# kubeconfigs that use them.
# shellcheck shell=bash

# Runs openssl quietly (key generation prints progress dots), showing its output only when it fails.
ossl() {
  local out
  out=$(openssl "$@" 2>&1) || {
    log "openssl $1 failed:"
    printf '%s\n' "$out" >&2
    return 1
  }
}

# ECDSA P-256 keys: generated in milliseconds where RSA takes about a quarter second each, and accepted by
# Kubernetes (ES256 service-account tokens too) and by rustls.
NEW_KEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)

new_ca() { # pki name commonName
  local pki=$1 name=$2 cn=$3
  ossl req -x509 -new "${NEW_KEY[@]}" -nodes -sha256 -days 365 -subj "/CN=$cn" \
    -keyout "$pki/$name.key" -out "$pki/$name.crt" -config <(
      printf '[req]\ndistinguished_name=dn\nx509_extensions=ext\n[dn]\n'
      printf '[ext]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n'
      printf 'subjectKeyIdentifier=hash\n'
    )
}

new_cert() { # pki ca name subject extendedKeyUsage [subjectAltName]
  local pki=$1 ca=$2 name=$3 subject=$4 eku=$5 san=${6:-}
  ossl req -new "${NEW_KEY[@]}" -nodes -subj "$subject" -keyout "$pki/$name.key" -out "$pki/$name.csr"
  ossl x509 -req -sha256 -days 365 -in "$pki/$name.csr" -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -out "$pki/$name.crt" -extfile <(
      printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
      printf 'extendedKeyUsage=%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$eku"
      [[ -z $san ]] || printf 'subjectAltName=%s\n' "$san"
    )
  rm -f "$pki/$name.csr"
}

make_pki() {
  local pki=$1
  mkdir -p "$pki"
  chmod 700 "$pki"
  new_ca "$pki" ca ferry-local-ca
  # kube-rs (rustls) verifies the IP SAN, so 127.0.0.1 must be in it; the in-cluster names keep the cert realistic.
  new_cert "$pki" ca apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,DNS:localhost,IP:$NODE_IP,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  new_cert "$pki" ca admin "/O=system:masters/CN=ferry-admin" clientAuth
  # The identity the bootstrap RBAC policy grants kube-controller-manager's permissions to.
  new_cert "$pki" ca controller-manager "/CN=system:kube-controller-manager" clientAuth
  # Front proxy (request-header authentication): delegated authentication in kube-controller-manager and any
  # aggregated API server needs its CA published, or they log errors forever.
  new_ca "$pki" front-proxy-ca ferry-local-front-proxy-ca
  new_cert "$pki" front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$pki/sa.key"
  ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
  if $NODE_MODE; then make_node_pki "$pki"; fi
}

write_kubeconfig() { # file server pki user
  local file=$1 server=$2 pki=$3 user=$4
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ferry-local
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 <"$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$pki/$user.crt")
    client-key-data: $(base64 -w0 <"$pki/$user.key")
contexts:
- name: ferry-local
  context:
    cluster: ferry-local
    user: $user
current-context: ferry-local
EOF
  chmod 600 "$file"
}
