// The watch page: plays the room with WebRTC (WHEP, sub-second) first, whoever publishes it (OBS over RTMP
// or a browser over WHIP), or mpegts.js (HTTP-FLV) or hls.js (HLS), and follows the room socket.
"use strict";
(function () {
  const urls = JSON.parse(document.getElementById("play-urls").textContent);
  const roomId = JSON.parse(document.getElementById("room-id").textContent);
  const video = document.getElementById("video");
  const state = document.getElementById("player-state");
  const notes = document.getElementById("stream-notes");
  let player = null;

  // WebRTC over WHEP: recvonly audio + video, the server answers with the publisher's codecs.
  function webrtcPlayer() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    window.__pc = pc; // for tests and the curious: getStats()
    let resource = null;
    let closed = false;
    const stream = new MediaStream();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (event) => { stream.addTrack(event.track); video.srcObject = stream; video.play().catch(() => {}); };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") state.textContent = "playing webrtc";
      if (pc.connectionState === "failed") { window.playerErrors.push("webrtc:failed"); fallback("the WebRTC connection failed"); }
    };
    (async () => {
      try {
        const servers = await fetch("/api/v1/rtc/ice-servers").then((r) => r.json()).then((b) => b.data.iceServers).catch(() => []);
        pc.setConfiguration({ iceServers: servers });
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise((resolve) => {
          if (pc.iceGatheringState === "complete") return resolve();
          pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
          setTimeout(resolve, 1500);
        });
        const response = await fetch(urls.whep, { method: "POST", body: pc.localDescription.sdp, headers: { "Content-Type": "application/sdp" } });
        if (closed) return;
        if (response.status !== 201) {
          let message = response.statusText;
          try { message = (await response.json()).message; } catch (e) { /* not JSON */ }
          throw new Error(message);
        }
        resource = new URL(response.headers.get("Location"), urls.whep).href;
        // What this stream does not carry over WebRTC yet (e.g. an OBS stream's AAC audio).
        notes.textContent = response.headers.get("X-Stream-Notes") || "";
        await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
      } catch (error) {
        if (!closed) { window.playerErrors.push("webrtc:" + error.message); fallback(error.message); }
      }
    })();
    return {
      destroy() {
        closed = true;
        if (resource) fetch(resource, { method: "DELETE" }).catch(() => {});
        pc.close();
        video.srcObject = null;
      },
    };
  }

  // WebRTC first; when the stream has nothing WebRTC plays without transcoding (e.g. HEVC), switch to HLS.
  function fallback(reason) {
    state.textContent = "WebRTC: " + reason + "; switching to HLS";
    document.querySelector("input[value=hls]").checked = true;
    play("hls");
  }

  // hls.js: the Low-Latency variant when the node makes one (lowLatencyMode: blocking playlist
  // reloads, parts, about 1.5 s behind live), else the MPEG-TS playlist. A stream without an LL
  // variant (a codec CMAF is not made for here) answers 404: then the regular playlist.
  function hlsPlayer(url, lowLatency) {
    const hls = new Hls({ lowLatencyMode: lowLatency });
    window.__hls = hls; // for tests: hls.latency, hls.levels
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (!data.fatal) return;
      if (lowLatency && data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR) {
        hls.destroy();
        player = hlsPlayer(urls.hls, false);
        return;
      }
      window.playerErrors.push(data.type + ":" + data.details);
      state.textContent = "error: " + data.details;
    });
    hls.loadSource(url);
    hls.attachMedia(video);
    state.textContent = lowLatency ? "playing low-latency hls" : "playing hls";
    return hls;
  }

  function stop() {
    if (player) { player.destroy(); player = null; }
    notes.textContent = "";
  }

  function play(kind) {
    stop();
    window.playerErrors = [];
    if (kind === "webrtc" && window.RTCPeerConnection) {
      player = webrtcPlayer();
      state.textContent = "connecting webrtc";
      return;
    } else if (kind === "flv" && window.mpegts && mpegts.getFeatureList().mseLivePlayback) {
      player = mpegts.createPlayer({ type: "flv", isLive: true, url: urls.flv }, { enableStashBuffer: false });
      player.on(mpegts.Events.ERROR, (type, detail) => { window.playerErrors.push(type + ":" + detail); state.textContent = "error: " + detail; });
      player.attachMediaElement(video);
      player.load();
    } else if (kind === "hls" && window.Hls && Hls.isSupported()) {
      player = hlsPlayer(urls.llhls || urls.hls, Boolean(urls.llhls));
    } else {
      state.textContent = kind + " playback is not supported by this browser";
      return;
    }
    state.textContent = "playing " + kind;
    video.play().catch(() => {});
  }

  document.querySelectorAll("input[name=player]").forEach((radio) => {
    radio.addEventListener("change", () => play(radio.value));
  });
  const wanted = new URLSearchParams(location.search).get("player");
  if (wanted) document.querySelector(`input[value=${wanted}]`).checked = true;
  play(document.querySelector("input[name=player]:checked").value);

  // Room socket: status, viewer count, chat. The token (if logged in elsewhere) is in localStorage.
  const token = localStorage.getItem("microvibe.access");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socketUrl = `${scheme}://${location.host}/api/v1/live/ws?room_id=${encodeURIComponent(roomId)}&role=viewer`;
  const socket = token ? new WebSocket(socketUrl, ["bearer", token]) : new WebSocket(socketUrl);
  const statusEl = document.getElementById("status");
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "live" || msg.type === "offline") {
      statusEl.textContent = msg.type === "live" ? "live" : "ended";
      statusEl.classList.toggle("live", msg.type === "live");
      if (msg.type === "live") play(document.querySelector("input[name=player]:checked").value);
    } else if (msg.type === "viewers") {
      document.getElementById("viewers").textContent = msg.data.count + " watching";
    } else if (msg.type === "chat") {
      const li = document.createElement("li");
      const who = document.createElement("b");
      who.textContent = msg.data.user + ": ";
      const text = document.createElement("span");
      text.innerHTML = msg.data.text; // the server sends chat text HTML-escaped
      li.append(who, text);
      document.getElementById("messages").append(li);
    } else if (msg.type === "error") {
      state.textContent = msg.data.message;
    }
  };
  document.getElementById("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("chat-text");
    if (input.value.trim()) socket.send(JSON.stringify({ type: "chat", text: input.value }));
    input.value = "";
  });
})();
