// The publish page: camera + microphone to the room with WHIP. The stream key is typed in and sent
// only in the Authorization header of the WHIP POST; it never goes into a URL or storage.
"use strict";
(function () {
  const roomId = JSON.parse(document.getElementById("room-id").textContent);
  const preview = document.getElementById("preview");
  const state = document.getElementById("publish-state");
  const startButton = document.getElementById("start");
  const stopButton = document.getElementById("stop");
  let pc = null;
  let resource = null;
  let stream = null;

  function show(text) { state.textContent = text; window.publishState = text; }

  async function iceServers() {
    try {
      const response = await fetch("/api/v1/rtc/ice-servers");
      return (await response.json()).data.iceServers;
    } catch (e) { return []; }
  }

  function gathered(peer, timeoutMs) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (peer.iceGatheringState === "complete") resolve(); };
      peer.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, timeoutMs);
    });
  }

  async function start(key) {
    show("opening camera and microphone");
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true });
    preview.srcObject = stream;
    pc = new RTCPeerConnection({ iceServers: await iceServers() });
    for (const track of stream.getTracks()) pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
    pc.addEventListener("connectionstatechange", () => {
      if (pc && pc.connectionState === "connected") show("live");
      else if (pc && (pc.connectionState === "failed" || pc.connectionState === "disconnected")) show("connection " + pc.connectionState);
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 2000);
    show("connecting");
    const response = await fetch(`/whip/${encodeURIComponent(roomId)}`, {
      method: "POST", body: pc.localDescription.sdp,
      headers: { "Content-Type": "application/sdp", "Authorization": "Bearer " + key },
    });
    if (response.status !== 201) {
      let message = response.statusText;
      try { message = (await response.json()).message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    resource = response.headers.get("Location");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  }

  async function stop() {
    if (resource) { fetch(resource, { method: "DELETE" }).catch(() => {}); resource = null; }
    if (pc) { pc.close(); pc = null; }
    if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
    preview.srcObject = null;
    startButton.disabled = false;
    stopButton.disabled = true;
  }

  document.getElementById("publish-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("stream-key");
    startButton.disabled = true;
    stopButton.disabled = false;
    try {
      await start(input.value.trim());
    } catch (error) {
      await stop();
      show("error: " + error.message);
    }
  });
  stopButton.addEventListener("click", async () => { await stop(); show("stopped"); });
  window.addEventListener("pagehide", () => { if (resource) navigator.sendBeacon && stop(); });
})();
