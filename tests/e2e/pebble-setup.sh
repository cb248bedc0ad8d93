# Pebble (Debian's package), Let's Encrypt's test ACME server, on the proxy VM of a sandbox:
# its API on localhost with a certificate from a throwaway CA (the test's ACME_CA_BUNDLE);
# it validates HTTP-01 on port 80 of the proxy, by its name. Run as root (tests/e2e/test_7).
set -e
export DEBIAN_FRONTEND=noninteractive
dpkg -s pebble >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq --no-install-recommends pebble >/dev/null; }
mkdir -p /etc/pebble && cd /etc/pebble
if [ ! -s ca.pem ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=sandbox-pebble-api-ca -keyout ca.key -out ca.pem 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out req.csr 2>/dev/null
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > ext.cnf
  openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile ext.cnf -out cert.pem 2>/dev/null
fi
cat > config.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
 "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
 "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false,
 "certificateValidityPeriod": 7776000}}
EOF
# A fresh pebble knows no accounts: forget certbot's account with an earlier one.
systemctl is-active --quiet pebble || rm -rf /etc/letsencrypt/accounts/localhost:14000
systemctl is-active --quiet pebble || systemd-run --quiet --unit=pebble -E PEBBLE_VA_NOSLEEP=1 -E PEBBLE_WFE_NONCEREJECT=0 /usr/bin/pebble -config /etc/pebble/config.json -strict=false
for i in $(seq 30); do curl -s --cacert ca.pem -o /dev/null https://localhost:14000/dir && exit 0; sleep 1; done
journalctl -u pebble --no-pager | tail -5
exit 1
