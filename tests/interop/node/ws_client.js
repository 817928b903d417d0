// A Node `ws` client that runs the interop exchange and prints a JSON summary.
// argv: URL, "deflate" or "plain".
const crypto = require("crypto");
const WebSocket = require("ws");

const [url, mode] = process.argv.slice(2);
const ws = new WebSocket(url, ["chat.v1", "chat.v2"], {
  perMessageDeflate: mode === "deflate",
  maxPayload: 16 * 1024 * 1024,
});
const summary = {};
const waiting = [];
ws.on("message", (data, isBinary) => waiting.shift()(isBinary ? data : data.toString()));
const next = () => new Promise((resolve) => waiting.push(resolve));

ws.on("open", async () => {
  summary.subprotocol = ws.protocol;
  summary.extensions = ws.extensions;  // the negotiated header, "" without compression
  const large = crypto.randomBytes(4 * 1024 * 1024 + 1);
  ws.send("héllo");
  summary.text = (await next()) === "héllo";
  const binary = Buffer.from([...Array(256).keys()]);
  ws.send(binary);
  summary.binary = Buffer.compare(await next(), binary) === 0;
  ws.send(large);
  summary.large = Buffer.compare(await next(), large) === 0;
  ws.send("frag", { fin: false });
  ws.send("men", { fin: false });
  ws.send("ted", { fin: true });
  summary.fragmented = (await next()) === "fragmented";
  await new Promise((resolve) => { ws.once("pong", resolve); ws.ping("interop"); });
  summary.ping = true;
  ws.close(4001, "done here");
});
ws.on("close", () => { console.log(JSON.stringify(summary)); process.exit(0); });
ws.on("error", (error) => { console.error(error); process.exit(1); });
