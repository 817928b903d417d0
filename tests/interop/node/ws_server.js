// A Node `ws` server for interop tests. Prints "PORT n" once listening. Echoes
// messages; "fragment-me" gets a fragmented reply, "close-me" a close with 4003.
// Prints "CLOSED code reason" when a client closes. argv[2]: "deflate" or "plain".
const { WebSocketServer } = require("ws");

const server = new WebSocketServer({
  host: "127.0.0.1",
  port: 0,
  maxPayload: 16 * 1024 * 1024,
  perMessageDeflate: process.argv[2] === "deflate",
  handleProtocols: (protocols) => (protocols.has("chat.v2") ? "chat.v2" : false),
});

server.on("listening", () => console.log(`PORT ${server.address().port}`));
server.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? null : data.toString();
    if (text === "fragment-me") {
      ws.send("frag", { fin: false });
      ws.send("men", { fin: false });
      ws.send("ted", { fin: true });
    } else if (text === "close-me") {
      ws.close(4003, "peer closing");
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on("close", (code, reason) => console.log(`CLOSED ${code} ${reason.toString()}`));
});
setTimeout(() => process.exit(0), 120000).unref();
