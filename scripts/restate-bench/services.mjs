// The Restate side of scripts/bench-vs-restate.sh: the same 4-step saga as examples/bench4.yaml.
// The workflow `bench` makes 4 durable calls in sequence, to 4 participant services s1..s4 that
// answer at once (each returns its input), and returns the last answer. Restate journals every
// call and every answer before the workflow moves on, as Sagaflow's engine journals every step.
//
//   node services.mjs PORT     serves all five on 127.0.0.1:PORT (HTTP/2 without TLS)
import * as http2 from "node:http2";
import * as restate from "@restatedev/restate-sdk";

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node services.mjs PORT");
  process.exit(2);
}

const participant = (name) =>
  restate.service({
    name,
    handlers: {
      do: async (_ctx, input) => input,
    },
  });
const steps = ["s1", "s2", "s3", "s4"].map(participant);

const bench = restate.workflow({
  name: "bench",
  handlers: {
    run: async (ctx, input) => {
      let answer = input;
      for (const step of steps) {
        answer = await ctx.serviceClient(step).do({ id: input.id });
      }
      return answer;
    },
  },
});

// Only the SDK's warnings and errors: logging per invocation would add to the CPU figures.
const logger = (meta, message, ...rest) => {
  if (meta.level === "warn" || meta.level === "error") {
    console.error(`${meta.level}:`, message, ...rest);
  }
};

// HTTP/2 without TLS, as restate.serve does, but on the loopback interface only.
const server = http2.createServer(restate.createEndpointHandler({ services: [bench, ...steps], logger }));
server.listen(port, "127.0.0.1", () => {
  console.error(`services.mjs: serving bench and s1..s4 on 127.0.0.1:${port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
