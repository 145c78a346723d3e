#!/usr/bin/env bash
# Make the TLS material for ringside's etcd: two CAs, two certificates per voter, and client
# certificates for sidecars and operators. The client CA signs the voters' client-port
# certificates and every client certificate; the peer CA signs only the voters' Raft
# certificates, so no client certificate is ever accepted on the peer port (2380).
#
#   etcd/gen-tls.sh [options] OUTDIR
#
# The voters come from the etcd config files (default: every *.conf.yml beside this script):
# each one's `name` and the hosts in its advertised client and peer URLs become the SANs of its
# certificate, so the certificates always match what the members advertise.
#
# Running it again changes nothing that exists: the CAs are kept unless --force, and a
# certificate is kept while it is there and signed by its CA. What it writes, in OUTDIR:
#   ca.pem, ca-key.pem                        the client CA (keep the keys off the voters)
#   peer-ca.pem, peer-ca-key.pem              the peer CA, for Raft between voters only
#   <voter>.pem, <voter>-key.pem              e.g. hetzner-cpu1.pem: the client port's certificate
#   <voter>-peer.pem, <voter>-peer-key.pem    the voter's Raft certificate (peer port, both ways)
#   client-<name>.pem, client-<name>-key.pem  e.g. client-ringside.pem: for etcd.tls in ringside
# Needs only `openssl` (1.1.1+, 3.x or LibreSSL).

set -euo pipefail

usage() {
    cat <<'EOF'
usage: gen-tls.sh [options] OUTDIR

  --extra-san SAN   add SAN (DNS:name or IP:address) to every voter certificate; repeatable
                    (e.g. IP:127.0.0.1 to reach a voter's etcd from the voter itself)
  --client NAME     issue client-NAME.pem (SAN DNS:NAME, no CN); repeatable (default: ringside).
  --conf-dir DIR    read the voters from DIR/*.conf.yml (default: this script's directory)
  --days N          validity of voter and client certificates in days (default 825)
  --reissue         issue voter and client certificates again with the existing CA
                    (new SANs, or before they expire)
  --force           make new CAs, and with them every certificate; existing clients and
                    members stop trusting each other until all have the new files
  -h, --help        this text
EOF
}

die() {
    echo "gen-tls.sh: $*" >&2
    exit 2
}

CA_DAYS=3650
days=825
force=false
reissue=false
conf_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
extra_sans=()
clients=()
outdir=

while [ $# -gt 0 ]; do
    case $1 in
        --extra-san)
            [ $# -ge 2 ] || die "--extra-san needs a value"
            [[ $2 =~ ^(DNS|IP):[^,[:space:]]+$ ]] || die "--extra-san $2: expected DNS:name or IP:address"
            extra_sans+=("$2")
            shift 2
            ;;
        --client)
            [ $# -ge 2 ] || die "--client needs a name"
            [[ $2 =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "--client $2: use letters, digits, '.', '_', '-'"
            clients+=("$2")
            shift 2
            ;;
        --conf-dir)
            [ $# -ge 2 ] || die "--conf-dir needs a directory"
            conf_dir=$2
            shift 2
            ;;
        --days)
            [ $# -ge 2 ] || die "--days needs a number"
            [[ $2 =~ ^[1-9][0-9]*$ ]] || die "--days $2: expected a positive number"
            days=$2
            shift 2
            ;;
        --reissue) reissue=true; shift ;;
        --force) force=true; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option $1" ;;
        *)
            [ -z "$outdir" ] || die "only one OUTDIR, got $outdir and $1"
            outdir=$1
            shift
            ;;
    esac
done
[ -n "$outdir" ] || { usage >&2; die "OUTDIR is required"; }
[ ${#clients[@]} -gt 0 ] || clients=(ringside)
command -v openssl >/dev/null || die "openssl is not installed"

# The value of a top-level `key: value` line in an etcd config file, quotes and comment removed.
conf_value() {
    sed -n "s/^$1:[[:space:]]*//p" "$2" | head -n 1 | sed -e 's/[[:space:]]#.*$//' -e "s/[\"']//g" -e 's/[[:space:]]*$//'
}

# "DNS:name,IP:a,IP:b" for one voter config: its name, then each distinct advertised host.
voter_sans() {
    local file=$1 name urls url host sans extra
    local -a url_list
    name=$(conf_value name "$file")
    sans="DNS:$name"
    urls="$(conf_value advertise-client-urls "$file"),$(conf_value initial-advertise-peer-urls "$file")"
    IFS=, read -r -a url_list <<<"$urls"
    for url in "${url_list[@]}"; do
        [ -n "$url" ] || continue
        host=${url#*://}
        host=${host%%/*}
        host=${host%:*}
        host=${host#[}
        host=${host%]}
        if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then host="IP:$host"; else host="DNS:$host"; fi
        case ",$sans," in *",$host,"*) ;; *) sans="$sans,$host" ;; esac
    done
    for extra in "${extra_sans[@]+"${extra_sans[@]}"}"; do
        case ",$sans," in *",$extra,"*) ;; *) sans="$sans,$extra" ;; esac
    done
    echo "$sans"
}

voter_files=()
for file in "$conf_dir"/*.conf.yml; do
    [ -e "$file" ] && voter_files+=("$file")
done
[ ${#voter_files[@]} -gt 0 ] || die "no *.conf.yml voter configs in $conf_dir (see --conf-dir)"

mkdir -p "$outdir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# An EC P-256 key: small, fast, and accepted by Go (etcd) and OpenSSL (ringside) alike.
new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

make_ca() {
    local base=$1 label=$2
    cat >"$work/$base.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ringside etcd $label CA $(date -u +%Y-%m-%d)
[v3_ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
    new_key "$work/$base-key.pem"
    openssl req -new -x509 -sha256 -days "$CA_DAYS" -key "$work/$base-key.pem" \
        -config "$work/$base.cnf" -extensions v3_ca -out "$work/$base.pem"
    chmod 644 "$work/$base.pem"
    mv "$work/$base-key.pem" "$outdir/$base-key.pem"
    mv "$work/$base.pem" "$outdir/$base.pem"
}

# issue BASENAME CN USAGES SANS CA: BASENAME.pem and BASENAME-key.pem in OUTDIR, signed by CA
# (ca or peer-ca).
# An empty CN makes a subject of O=ringside only: etcd's JSON gateway answers HTTP 400 to a
# client certificate that carries a CN once auth is on (identity is then user and password).
issue() {
    local base=$1 cn=$2 usages=$3 sans=$4 ca=$5 subject
    [ -s "$outdir/$ca-key.pem" ] || die "$outdir/$ca-key.pem is missing: cannot issue $base.pem"
    if [ -n "$cn" ]; then subject="CN = $cn"; else subject="O = ringside"; fi
    cat >"$work/$base.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
$subject
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = $usages
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
EOF
    new_key "$work/$base-key.pem"
    openssl req -new -key "$work/$base-key.pem" -config "$work/$base.cnf" -out "$work/$base.csr"
    openssl x509 -req -sha256 -days "$days" -in "$work/$base.csr" \
        -CA "$outdir/$ca.pem" -CAkey "$outdir/$ca-key.pem" -set_serial "0x$(openssl rand -hex 15)" \
        -extfile "$work/$base.cnf" -extensions leaf -out "$work/$base.pem" 2>/dev/null
    chmod 644 "$work/$base.pem"
    mv "$work/$base-key.pem" "$outdir/$base-key.pem"
    mv "$work/$base.pem" "$outdir/$base.pem"
}

# The SANs a certificate carries, in the "DNS:x,IP:y" form used above, sorted.
cert_sans() {
    openssl x509 -noout -text -in "$1" |
        sed -n '/X509v3 Subject Alternative Name/{n;p;}' |
        sed -e 's/IP Address:/IP:/g' -e 's/[[:space:]]//g' | tr ',' '\n' | sort | paste -sd, -
}

# ensure BASENAME CN USAGES SANS CA: keep a good existing certificate, else issue one.
ensure() {
    local base=$1 cn=$2 usages=$3 sans=$4 ca=$5 wanted have
    local cert="$outdir/$base.pem" key="$outdir/$base-key.pem"
    if [ "$reissue" = false ] && [ "${new_ca[$ca]}" = false ] && [ -s "$cert" ] && [ -s "$key" ]; then
        if [ -z "$cn" ] && openssl x509 -noout -subject -in "$cert" | grep -q "CN *="; then
            echo "has a CN:  $cert (refused by etcd's gateway with auth on): issuing again"
        elif openssl verify -CAfile "$outdir/$ca.pem" "$cert" >/dev/null 2>&1; then
            wanted=$(echo "$sans" | tr ',' '\n' | sort | paste -sd, -)
            have=$(cert_sans "$cert")
            if [ "$have" = "$wanted" ]; then
                echo "kept       $cert"
            else
                echo "kept       $cert, but its SANs ($have) differ from $wanted: use --reissue"
            fi
            return
        else
            echo "not signed by $outdir/$ca.pem: $cert" >&2
        fi
    fi
    issue "$base" "$cn" "$usages" "$sans" "$ca"
    echo "issued     $cert ($sans)"
}

declare -A new_ca=([ca]=false [peer-ca]=false)
for ca in ca peer-ca; do
    if [ "$force" = true ] || [ ! -s "$outdir/$ca.pem" ]; then
        if [ "$ca" = ca ]; then label=client; else label=peer; fi
        make_ca "$ca" "$label"
        new_ca[$ca]=true # every certificate it signs must come from the new one
        echo "new CA     $outdir/$ca.pem"
    else
        echo "kept CA    $outdir/$ca.pem"
    fi
done

for file in "${voter_files[@]}"; do
    name=$(conf_value name "$file")
    [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "$file: no usable 'name:'"
    # serverAuth for the client port, clientAuth for the voter's own health check on it.
    ensure "$name" "$name" "serverAuth, clientAuth" "$(voter_sans "$file")" ca
    # serverAuth for its own peer port, clientAuth for dialing the other voters'.
    ensure "$name-peer" "$name" "serverAuth, clientAuth" "$(voter_sans "$file")" peer-ca
done

for client in "${clients[@]}"; do
    ensure "client-$client" "" "clientAuth" "DNS:$client" ca
done

cat <<EOF

On each voter, /etc/etcd/pki/ needs ca.pem, peer-ca.pem, <voter>.pem, <voter>-key.pem,
<voter>-peer.pem and <voter>-peer-key.pem (keys readable by the etcd user only).
On each node, ringside's etcd.tls needs ca.pem and a client pair.
See etcd/OPERATIONS.md, "TLS".
EOF
