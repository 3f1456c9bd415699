#!/usr/bin/env bash
# Proves that deploy/nginx.conf and deploy/Caddyfile relay a callback to the Worker unchanged.
# Needs nginx, caddy, openssl and curl, and the Worker served by `npm start` on 127.0.0.1:8080
# with its local-only tokens. Each relay runs from a copy of the shipped file that differs only in
# what a test on loopback must change: its port, a self-signed certificate, and the plain-HTTP
# local Worker as upstream. Checks, through each relay: a valid callback is stored (the token in the
# path passed), the raw bytes of a refused body arrive exactly as sent (read back from
# GET /v1/rejected), and a path other than the callback, also one that becomes the callback path
# only once decoded or cleaned, is answered 404 by the relay itself.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKER=${WORKER:-http://127.0.0.1:8080}
CALLBACK_TOKEN=${CALLBACK_TOKEN:-local-callback-token}
LOOKUP_TOKEN=${LOOKUP_TOKEN:-local-lookup-token}
work=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; sleep 0.2; fi
	rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	-keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

# nginx on 8443.
sed -e "s#/etc/ssl/tencent-ses-relay/fullchain.pem#$work/cert.pem#" \
	-e "s#/etc/ssl/tencent-ses-relay/privkey.pem#$work/key.pem#" \
	-e "s#listen 8080 ssl#listen 127.0.0.1:8443 ssl#" \
	-e "s#^pid .*#pid $work/nginx.pid;#" \
	-e "s#set \$worker worker.example.com#set \$worker ${WORKER#http://}#" \
	-e "s#proxy_pass https://\$worker#proxy_pass http://\$worker#" \
	deploy/nginx.conf >"$work/nginx.conf"
nginx -t -q -c "$work/nginx.conf"
nginx -c "$work/nginx.conf"

# Caddy on 8444.
sed -e "s#^relay.example.com:8080#localhost:8444#" \
	-e "s#/etc/ssl/tencent-ses-relay/fullchain.pem#$work/cert.pem#" \
	-e "s#/etc/ssl/tencent-ses-relay/privkey.pem#$work/key.pem#" \
	-e "s#reverse_proxy https://worker.example.com#reverse_proxy $WORKER#" \
	deploy/Caddyfile >"$work/Caddyfile"
XDG_DATA_HOME="$work" XDG_CONFIG_HOME="$work" caddy run --config "$work/Caddyfile" --adapter caddyfile >"$work/caddy.log" 2>&1 &
pids+=($!)

wait_for() {
	for _ in $(seq 1 50); do
		curl -s -o /dev/null --cacert "$work/cert.pem" "$1" && return 0
		sleep 0.2
	done
	echo "relay at $1 did not start" >&2
	return 1
}

failures=0
check() {
	local name=$1 relay=$2
	wait_for "$relay/"
	local id="relay-$name-$RANDOM$RANDOM"
	local event="{\"event\":\"delivered\",\"email\":\"$id@example.com\",\"bulkId\":\"$id\",\"timestamp\":1767225600}"
	local answer
	answer=$(curl -s --cacert "$work/cert.pem" -X POST --data-binary "$event" "$relay/v1/callbacks/tencent/$CALLBACK_TOKEN")
	if [ "$answer" != '{"ok":true,"received":1,"stored":1,"duplicates":0}' ]; then
		echo "$name: the callback was not stored: $answer" >&2
		failures=$((failures + 1))
	elif ! curl -s -H "Authorization: Bearer $LOOKUP_TOKEN" "$WORKER/v1/events?bulkId=$id" | grep -q "\"email\":\"$id@example.com\""; then
		echo "$name: the stored event does not read back" >&2
		failures=$((failures + 1))
	fi

	# Bytes that are not UTF-8 are refused and kept as received: compare them with what was sent.
	printf '{"event":"open","email":"%s@example.com","timestamp":1,"reason":"\xff\xfe\x00 %s"}' "$id" "$id" >"$work/raw.bin"
	local status sent kept
	status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/cert.pem" -X POST \
		-H 'Content-Type: application/octet-stream' --data-binary "@$work/raw.bin" \
		"$relay/v1/callbacks/tencent/$CALLBACK_TOKEN")
	sent=$(base64 -w0 <"$work/raw.bin")
	# Rejections in the same second are not ordered: find this one among the latest.
	kept=$(curl -s -H "Authorization: Bearer $LOOKUP_TOKEN" "$WORKER/v1/rejected?limit=20" |
		node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const id=process.argv[1];const r=JSON.parse(s).rejected.find(x=>x.bodyEncoding==="base64"&&Buffer.from(x.body,"base64").includes(id));process.stdout.write(r?r.body:"")})' "$id")
	if [ "$status" != 400 ] || [ "$sent" != "$kept" ]; then
		echo "$name: the raw body did not arrive unchanged (status $status)" >&2
		failures=$((failures + 1))
	fi

	status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/cert.pem" "$relay/healthz")
	if [ "$status" != 404 ]; then
		echo "$name: a path other than the callback was forwarded (status $status)" >&2
		failures=$((failures + 1))
	fi
	# Paths that look like the callback only once decoded and cleaned: the Worker would read each
	# as another route (both answer 200 there), so the relay must answer 404 itself.
	local raw
	for raw in '/v1/callbacks/tencent/x\..\..\..\..\healthz' \
		'/v1/suppressions/..%2Fcallbacks%2Ftencent%2Fx%40example.com'; do
		status=$(curl -s --path-as-is -o /dev/null -w '%{http_code}' --cacert "$work/cert.pem" \
			-H "Authorization: Bearer $LOOKUP_TOKEN" "$relay$raw")
		if [ "$status" != 404 ]; then
			echo "$name: $raw was forwarded (status $status)" >&2
			failures=$((failures + 1))
		fi
	done
	echo "relay $name: checked"
}

check nginx https://127.0.0.1:8443
check caddy https://localhost:8444
if [ "$failures" -ne 0 ]; then
	echo "relay test: $failures check(s) failed" >&2
	exit 1
fi
echo "relay test: nginx and caddy forward callbacks unchanged"
