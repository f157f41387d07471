// bae.js off the page's main thread: the compare page's decoder (app.js), so that decoding a
// large image never freezes the page. A message {id, bytes, names} (a .bae file and the
// shipped models that may have made it) is answered {id, width, height, data} (RGBA) or
// {id, error}.
import { decode, loadModel } from "./bae.js";

const models = new Map(); // model name → Promise of the bae.js model

function model(name) {
  if (!models.has(name)) {
    const loading = loadModel(`/models/${encodeURIComponent(name)}.json`);
    loading.catch(() => models.delete(name)); // a failed load is retried next time
    models.set(name, loading);
  }
  return models.get(name);
}

onmessage = async ({ data: { id, bytes, names } }) => {
  try {
    const { width, height, data } = decode(bytes, await Promise.all(names.map(model)));
    postMessage({ id, width, height, data }, [data.buffer]);
  } catch (error) {
    postMessage({ id, error: error.message });
  }
};
