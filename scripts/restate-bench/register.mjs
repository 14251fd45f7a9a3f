// Part of scripts/bench-vs-restate.sh: waits until restate-server answers on its admin and ingress
// ports, registers the deployment of services.mjs through the admin API (POST /deployments), and
// waits until the ingress runs the `bench` workflow end to end.
//
//   node register.mjs ADMIN_URL INGRESS_URL DEPLOYMENT_URL [TIMEOUT_SECS]
const [admin, ingress, deployment, timeoutArg] = process.argv.slice(2);
if (!admin || !ingress || !deployment) {
  console.error("usage: node register.mjs ADMIN_URL INGRESS_URL DEPLOYMENT_URL [TIMEOUT_SECS]");
  process.exit(2);
}
const deadline = Date.now() + Number(timeoutArg || 60) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Retries `attempt` (which returns true when done) until the deadline; `what` names it.
async function until(what, attempt) {
  let last = "";
  while (Date.now() < deadline) {
    try {
      if (await attempt()) return;
    } catch (e) {
      last = e.cause?.message ?? e.message;
    }
    await sleep(200);
  }
  console.error(`register.mjs: ${what} did not succeed in time${last ? ` (last error: ${last})` : ""}`);
  process.exit(1);
}

await until(`GET ${admin}/health`, async () => (await fetch(`${admin}/health`)).ok);
await until(`GET ${ingress}/restate/health`, async () => (await fetch(`${ingress}/restate/health`)).ok);
await until(`POST ${admin}/deployments`, async () => {
  const res = await fetch(`${admin}/deployments`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ uri: deployment }),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 300)}`);
  const services = JSON.parse(text).services.map((s) => s.name).sort();
  console.error(`register.mjs: registered ${deployment}: ${services.join(", ")}`);
  return true;
});
let probes = 0;
await until("a first saga through the ingress", async () => {
  const key = `probe-${Date.now().toString(36)}-${probes++}`;
  const res = await fetch(`${ingress}/bench/${key}/run`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ id: key }),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`HTTP ${res.status}: ${text.slice(0, 300)}`);
  if (JSON.parse(text).id !== key) throw new Error(`unexpected answer ${text.slice(0, 300)}`);
  return true;
});
