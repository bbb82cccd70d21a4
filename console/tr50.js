// A TR50 client for the browser: envelopes over the gateway's WebSocket (one connection, server
// messages for the live tail), or over `POST /api` on the console's own origin when the gateway
// has no WebSocket port or it cannot be reached.

export class Tr50Error extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export const OFFLINE = 0; // not a TR50 code: the gateway did not answer

export class Tr50Client {
  constructor(config, { onNotify = () => {}, onLink = () => {} } = {}) {
    this.websocket = config.websocket; // {port, path} or null
    this.sessionId = null;
    this.onNotify = onNotify;
    this.onLink = onLink; // "up" | "down": the WebSocket opened or was lost
    this.seq = 0;
    this.pending = new Map(); // command id -> {resolve, reject}
    this.socket = null;
    this.opening = null;
    this.wsFailedAt = -Infinity;
  }

  get canPush() {
    return this.websocket != null;
  }

  get wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.hostname}:${this.websocket.port}${this.websocket.path}`;
  }

  // One command: its result params, or a thrown Tr50Error.
  async call(command, params) {
    const replies = await this.batch({ c: { command, params } });
    if (replies.c instanceof Error) throw replies.c;
    return replies.c;
  }

  // Several commands in one envelope: {name: {command, params}} -> {name: params | Tr50Error}.
  async batch(commands) {
    const ids = {};
    const envelope = {};
    if (this.sessionId) envelope.auth = { sessionId: this.sessionId };
    for (const [name, body] of Object.entries(commands)) {
      const id = String(++this.seq);
      ids[name] = id;
      envelope[id] = body.params === undefined ? { command: body.command } : body;
    }
    const reply = await this.send(envelope, Object.values(ids));
    const results = {};
    for (const [name, id] of Object.entries(ids)) {
      const answer = reply[id];
      if (!answer) results[name] = new Tr50Error(OFFLINE, "no reply to this command");
      else if (answer.success) results[name] = answer.params ?? {};
      else results[name] = new Tr50Error(answer.errorCodes?.[0], answer.errorMessages?.[0] ?? "failed");
    }
    return results;
  }

  async send(envelope, ids) {
    if (this.canPush && performance.now() - this.wsFailedAt > 10_000) {
      try {
        const socket = await this.open();
        return await new Promise((resolve, reject) => {
          const reply = {};
          let left = ids.length;
          for (const id of ids) {
            this.pending.set(id, {
              resolve: (answer) => {
                reply[id] = answer;
                if (--left === 0) resolve(reply);
              },
              reject,
            });
          }
          socket.send(JSON.stringify(envelope));
        });
      } catch (error) {
        if (!(error instanceof LinkError)) throw error;
        // The WebSocket is unreachable (a proxy that forwards only the HTTP port, say): this
        // envelope goes over HTTP; the WebSocket is tried again in ten seconds.
        this.wsFailedAt = performance.now();
      }
    }
    let response;
    try {
      response = await fetch("/api", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(envelope),
      });
    } catch {
      throw new Tr50Error(OFFLINE, "cannot reach the gateway");
    }
    if (!response.ok) throw new Tr50Error(OFFLINE, `the gateway answered HTTP ${response.status}`);
    return response.json();
  }

  open() {
    if (this.socket?.readyState === WebSocket.OPEN) return Promise.resolve(this.socket);
    if (this.opening) return this.opening;
    this.opening = new Promise((resolve, reject) => {
      const socket = new WebSocket(this.wsUrl);
      socket.onopen = () => {
        this.socket = socket;
        this.opening = null;
        this.onLink("up");
        resolve(socket);
      };
      socket.onerror = () => {}; // onclose follows with what matters
      socket.onclose = () => {
        const wasOpen = this.socket === socket;
        this.socket = null;
        this.opening = null;
        const lost = new LinkError("connection to the gateway lost");
        for (const waiter of this.pending.values()) waiter.reject(lost);
        this.pending.clear();
        if (wasOpen) this.onLink("down");
        else reject(new LinkError("cannot open a WebSocket to the gateway"));
      };
      socket.onmessage = (event) => this.received(event.data);
    });
    return this.opening;
  }

  received(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    if (message.notify) {
      this.onNotify(message.notify);
      return;
    }
    for (const [id, answer] of Object.entries(message)) {
      const waiter = this.pending.get(id);
      if (waiter) {
        this.pending.delete(id);
        waiter.resolve(answer);
      }
    }
  }

  close() {
    this.socket?.close(1000);
  }
}

class LinkError extends Tr50Error {
  constructor(message) {
    super(OFFLINE, message);
  }
}
