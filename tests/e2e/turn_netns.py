"""Run inside a fresh network namespace (`unshare --net`): bring lo up, start coturn and the service
(told about coturn by RTC_TURN_URLS / RTC_TURN_SECRET), and in Chromium, with `iceTransportPolicy:
"relay"`, publish the fake camera by WHIP and play it back by WHEP through coturn; then try to play
with a wrong password and with an expired credential. Prints one JSON line; tests/e2e/test_turn.py
runs it."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import subprocess
import sys
import time

from tests.support.api import api, create_room, register
from tests.support.browser import WEBRTC_FLAGS, chromium
from tests.support.procs import Service, coturn

TTL = 600  # not the 86400 default, so the test sees the setting is used
WINDOW_S = 5
# coturn's log line for a request it answered, e.g. "user <1796186856:anonymous>: incoming packet ALLOCATE
# processed, success" (the first, username-less request of every allocation is a 401 too: not matched).
TURN_EVENT = re.compile(r"user <\d+:([^>]+)>: incoming packet (\w+) processed, (success|error 401)")

# connect(kind, roomId, iceServers, bearer, waitS, name): a relay-only peer connection that publishes the
# fake camera (whip) or plays (whep) without trickle ICE, kept as window.pcs[name]. Resolves with what its
# ICE gathered, the HTTP status, and the connection state after at most waitS.
CONNECT = """
const [kind, roomId, iceServers, bearer, waitS, name] = arguments;
const done = arguments[arguments.length - 1];
(async () => {
  const pc = new RTCPeerConnection({iceServers, iceTransportPolicy: 'relay'});
  (window.pcs = window.pcs || {})[name] = pc;
  const gathered = {types: [], errors: []};
  pc.onicecandidate = (e) => { if (e.candidate) gathered.types.push(e.candidate.type); };
  pc.onicecandidateerror = (e) => gathered.errors.push(e.errorCode);
  if (kind === 'whip') {
    const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
    for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly', streams: [stream]});
  } else {
    pc.addTransceiver('video', {direction: 'recvonly'});
    pc.addTransceiver('audio', {direction: 'recvonly'});
  }
  await pc.setLocalDescription(await pc.createOffer());
  // Non-trickle: the offer carries every candidate, so wait for gathering to finish.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === 'complete') resolve(); };
    setTimeout(resolve, 10000);
  });
  const headers = {'Content-Type': 'application/sdp'};
  if (bearer) headers.Authorization = 'Bearer ' + bearer;
  const response = await fetch(`/${kind}/${roomId}`, {method: 'POST', body: pc.localDescription.sdp, headers});
  const answer = await response.text();
  if (response.status === 201) await pc.setRemoteDescription({type: 'answer', sdp: answer});
  const deadline = performance.now() + waitS * 1000;
  while (!['connected', 'failed'].includes(pc.connectionState) && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
  }
  done({status: response.status, state: pc.connectionState, gathered,
        offer_candidates: pc.localDescription.sdp.split('\\r\\n').filter((l) => l.startsWith('a=candidate:')).length});
})().catch((e) => done({error: String(e)}));
"""

# stats(name): the selected candidate pair's two ends, and the video counters of window.pcs[name].
STATS = """
const [name] = arguments;
const done = arguments[arguments.length - 1];
window.pcs[name].getStats().then((report) => {
  const byId = {};
  report.forEach((s) => { byId[s.id] = s; });
  let pair = null;
  const out = {ms: performance.now()};
  report.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = byId[s.selectedCandidatePairId];
    if (s.type === 'media-source' && s.kind === 'video') out.camera_frames = s.frames;
    if (s.type === 'outbound-rtp' && s.kind === 'video') out.frames_sent = s.framesSent;
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.frames_decoded = s.framesDecoded;
  });
  const end = (c) => c && {type: c.candidateType, address: c.address, protocol: c.protocol,
                           relay_protocol: c.relayProtocol, url: c.url};
  out.local = pair && end(byId[pair.localCandidateId]);
  out.remote = pair && end(byId[pair.remoteCandidateId]);
  done(out);
});
"""


def credential(secret: str, username: str) -> str:
    """coturn's REST-API password: base64(HMAC-SHA1(secret, username)), computed independently of sfu/ice.py."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def bad_servers(turn_url: str, secret: str) -> dict[str, list[dict]]:
    """ICE servers coturn must refuse: a wrong password, and a well-signed credential that has expired."""
    fresh = f"{int(time.time()) + TTL}:wrong-password"
    expired = f"{int(time.time()) - 60}:expired"
    return {"wrong-password": [{"urls": [turn_url], "username": fresh, "credential": credential("wrong", fresh)}],
            "expired": [{"urls": [turn_url], "username": expired, "credential": credential(secret, expired)}]}


def play_through_turn(browser, room_id: str, key: str, servers: list[dict], result: dict) -> None:
    """Publish and play relay-only; count the camera's frames and the player's decoded ones over WINDOW_S."""
    result["publish"] = browser.execute_async_script(CONNECT, "whip", room_id, servers, key, 15, "publisher")
    result["play"] = browser.execute_async_script(CONNECT, "whep", room_id, servers, "", 15, "player")
    deadline = time.monotonic() + 10  # the first keyframe reaches the player
    while time.monotonic() < deadline and not browser.execute_async_script(STATS, "player").get("frames_decoded"):
        time.sleep(0.2)
    before = [browser.execute_async_script(STATS, name) for name in ("publisher", "player")]
    time.sleep(WINDOW_S)
    after = [browser.execute_async_script(STATS, name) for name in ("publisher", "player")]
    result["publisher_stats"] = {"before": before[0], "after": after[0]}
    result["player_stats"] = {"before": before[1], "after": after[1]}


def turn_events(log: str) -> dict[str, dict[str, int]]:
    """What coturn itself logged, by credential user: requests that succeeded (ALLOCATE, CHANNEL_BIND...)
    and requests refused with 401 after the client had sent a username and password."""
    events: dict[str, dict[str, int]] = {}
    for user, request, outcome in TURN_EVENT.findall(log):
        counts = events.setdefault(user, {})
        key = request if outcome == "success" else "refused"
        counts[key] = counts.get(key, 0) + 1
    return events


def main() -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    secret = secrets.token_urlsafe(24)
    result: dict = {"secret": secret, "ttl": TTL}
    with coturn(secret) as turn:
        env = {"RTC_TURN_URLS": turn.url, "RTC_TURN_SECRET": secret, "RTC_TURN_TTL": str(TTL),
               "RTC_LISTEN_IPS": "127.0.0.1"}
        with Service(media=False, env=env) as service:
            token = register(service, "turn-owner")
            room = create_room(service, token, "turn room")
            room_id, key = room["room"]["room_id"], room["stream_key"]
            result["asked_at"] = time.time()
            result["ice_servers"] = api(service, "/api/v1/rtc/ice-servers")[1]["data"]["iceServers"]
            result["turn_url"] = turn.url
            with chromium(WEBRTC_FLAGS) as browser:
                browser.set_script_timeout(40)
                browser.get(service.url("/api/v1/rtc/ice-servers"))  # any same-origin page for fetch()
                servers = browser.execute_async_script(
                    "const done = arguments[0]; fetch('/api/v1/rtc/ice-servers')"
                    ".then((r) => r.json()).then((b) => done(b.data.iceServers));")
                result["browser_ice_servers"] = servers
                play_through_turn(browser, room_id, key, servers, result)
                result["rtc_stats"] = json.loads(service.get("/api/v1/rtc/stats")[1])["data"]
                result["refused"] = {name: browser.execute_async_script(CONNECT, "whep", room_id, bad, "", 4, name)
                                     for name, bad in bad_servers(turn.url, secret).items()}
            result["service_log_tail"] = service.log()[-1500:]
        result["turn_log"] = turn_events(turn.log())
        result["turn_log_tail"] = turn.log()[-3000:]
    return result


if __name__ == "__main__":
    print(json.dumps(main()), file=sys.stdout, flush=True)
