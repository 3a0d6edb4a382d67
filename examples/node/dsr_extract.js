// Answer one data-subject request with dsr-connector, from Node.js.
//
//   npm ci --prefix examples/node
//   node examples/node/dsr_extract.js --addr 127.0.0.1:50051 --source demo \
//       --kind email --value alice@example.com --out alice-node
//   node examples/node/dsr_extract.js --addr 127.0.0.1:50051 --source demo \
//       --kind email --value user1002@example.net --erase
//
// What an orchestrator should do, shown end to end:
//   * the proto loaded from proto/ at start-up with @grpc/proto-loader (no generated code);
//   * a deadline on every call, x-request-id, and a bearer token when --token-env names one;
//   * the documented statuses: UNAVAILABLE is retried with backoff (at least as long as the
//     server's grpc-retry-pushback-ms asks); every other error stops, with what to do about it;
//   * the data package: one JSON-lines file per table, manifest.json and README.txt, written to
//     a temporary directory and renamed into place only once the manifest has arrived;
//   * with --erase, an erasure instead: a preview (dry run), then the erasure confirmed by the
//     preview's digest (ABORTED when the rows changed in between: preview again).
//
// Exit status: 0 written; 2 bad request or caller (fix and resend); 3 the service cannot
// answer as configured (schema drift); 4 the answer cannot be trusted (DATA_LOSS): escalate;
// 5 gave up after retries or the deadline; 1 anything else.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const ROOT = path.resolve(__dirname, '..', '..');
const { status: Status } = grpc;

const STOP = {
  [Status.INVALID_ARGUMENT]: [2, 'the request is malformed; fix it'],
  [Status.NOT_FOUND]: [2, 'unknown source or table'],
  [Status.UNAUTHENTICATED]: [2, 'no valid bearer token (see --token-env)'],
  [Status.PERMISSION_DENIED]: [2, 'this caller may not read this source'],
  [Status.FAILED_PRECONDITION]: [3, 'the live schema no longer matches the data map'],
  [Status.DATA_LOSS]: [4, 'counts did not verify: discard everything and escalate'],
  [Status.DEADLINE_EXCEEDED]: [5, 'the deadline passed; raise --deadline'],
  [Status.RESOURCE_EXHAUSTED]: [5, 'the service is busy or a row is too large'],
  [Status.UNAVAILABLE]: [5, 'still unavailable after every attempt; try later'],
  [Status.ABORTED]: [5, 'the rows changed since the preview; preview again'],
  [Status.UNKNOWN]: [4, "the erasure's outcome is unknown: escalate"],
};

function parseArgs(argv) {
  const args = { deadline: '10m', attempts: 5, requestId: `node-${crypto.randomUUID()}`, complianceTag: '' };
  const names = {
    '--addr': 'addr', '--source': 'source', '--kind': 'kind', '--value': 'value',
    '--value-env': 'valueEnv', '--out': 'out', '--token-env': 'tokenEnv',
    '--request-id': 'requestId', '--compliance-tag': 'complianceTag',
    '--deadline': 'deadline', '--attempts': 'attempts',
  };
  for (let i = 0; i < argv.length; i += 2) {
    if (argv[i] === '--erase') {
      args.erase = true;
      i -= 1;
      continue;
    }
    const name = names[argv[i]];
    if (!name || argv[i + 1] === undefined) throw new Error(`unknown or incomplete argument ${argv[i]}`);
    args[name] = argv[i + 1];
  }
  for (const required of ['addr', 'source', 'kind'].concat(args.erase ? [] : ['out'])) {
    if (!args[required]) throw new Error(`--${required} is required`);
  }
  args.deadline = duration(String(args.deadline));
  args.attempts = Number(args.attempts);
  return args;
}

// Seconds from "90", "90s", "500ms", "10m" or "1h".
function duration(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!m) throw new Error(`--deadline: '${text}' is not a duration like 90s or 10m`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] || 's'];
}

// Protobuf's JSON form of a Timestamp: UTC, with 0, 3, 6 or 9 fraction digits.
function timestamp(t) {
  const seconds = BigInt(t.seconds);
  const base = new Date(Number(seconds) * 1000).toISOString().slice(0, 19);
  let nanos = String(t.nanos || 0).padStart(9, '0');
  if (Number(nanos) === 0) return `${base}Z`;
  if (nanos.endsWith('000000')) nanos = nanos.slice(0, 3);
  else if (nanos.endsWith('000')) nanos = nanos.slice(0, 6);
  return `${base}.${nanos}Z`;
}

// A typed Value as JSON text: the same rendering as `dsr-connector extract`. 64-bit integers
// arrive as strings (longs: String) and are written as JSON numbers with every digit.
function render(value) {
  switch (value.kind) {
    case undefined:
    case null:
    case 'null_value': return 'null';
    case 'bool_value': return value.bool_value ? 'true' : 'false';
    case 'int64_value': return String(value.int64_value);
    case 'double_value': {
      const d = value.double_value;
      if (Number.isFinite(d)) return JSON.stringify(d);
      return JSON.stringify(Number.isNaN(d) ? 'NaN' : d > 0 ? 'Infinity' : '-Infinity');
    }
    case 'bytes_value': return JSON.stringify(Buffer.from(value.bytes_value).toString('base64'));
    case 'timestamp_value': return JSON.stringify(timestamp(value.timestamp_value));
    case 'json_value':
      try { JSON.parse(value.json_value); return value.json_value; } // embedded as sent
      catch { return JSON.stringify(value.json_value); }
    default: return JSON.stringify(value[value.kind]);
  }
}

function privateFile(file, text) {
  fs.writeFileSync(file, text, { mode: 0o600, flag: 'wx' });
}

// A data package written to a private temporary directory beside `out`.
class Package {
  constructor(out) {
    if (fs.existsSync(out)) throw new Error(`${out} already exists; choose a new directory`);
    this.out = out;
    this.dir = fs.mkdtempSync(path.join(path.dirname(path.resolve(out)), `.${path.basename(out)}.partial-`));
    this.tables = new Map();
  }

  start(started) {
    this.started = started;
    for (const t of started.tables) {
      const name = t.table.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^\./, '_');
      const file = path.join(this.dir, `${name}.jsonl`);
      this.tables.set(t.table, { file, fd: fs.openSync(file, 'wx', 0o600), columns: t.columns, rows: 0 });
    }
  }

  batch(batch) {
    const t = this.tables.get(batch.table);
    const lines = batch.rows.map((row) => '{' + row.values
      .map((v, i) => `${JSON.stringify(t.columns[i].name)}:${render(v)}`).join(',') + '}\n');
    fs.writeSync(t.fd, lines.join(''));
    t.rows += batch.rows.length;
  }

  completed(done) {
    const t = this.tables.get(done.table);
    if (Number(done.row_count) !== t.rows) {
      throw new Error(`${done.table}: ${t.rows} rows received, the server says ${done.row_count}`);
    }
    fs.fsyncSync(t.fd);
    fs.closeSync(t.fd);
    t.fd = null;
    process.stderr.write(`${done.table}: ${done.row_count} row(s), count verified\n`);
  }

  finish(manifest) {
    for (const c of manifest.tables) {
      const t = this.tables.get(c.table);
      if (!c.verified || !t || Number(c.row_count) !== t.rows) {
        throw new Error(`${c.table}: the manifest does not match the stream`);
      }
    }
    privateFile(path.join(this.dir, 'manifest.json'), JSON.stringify(manifestJson(manifest), null, 2) + '\n');
    const described = new Map(this.started.categories.map((c) => [c.name, c.description]));
    const lines = [`Your personal data from "${manifest.source}"`, '',
      `Read from one snapshot taken at ${timestamp(manifest.extraction_timestamp)}.`,
      `Extraction: ${manifest.extraction_id}`, '', 'Files:'];
    for (const t of this.started.tables) {
      lines.push(`  ${path.basename(this.tables.get(t.table).file)}: ${this.tables.get(t.table).rows} record(s). ${t.description}`.trimEnd());
      for (const c of t.columns) lines.push(`      ${c.name}: ${c.category} ${described.get(c.category) || ''}`.trimEnd());
    }
    privateFile(path.join(this.dir, 'README.txt'), lines.join('\n') + '\n');
    fs.renameSync(this.dir, this.out);
  }

  discard() {
    for (const t of this.tables.values()) if (t.fd !== null) fs.closeSync(t.fd);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// The manifest in protobuf's canonical JSON form (as `dsr-connector extract` writes it).
function manifestJson(m) {
  const out = {
    subjectId: m.subject_id, piiFields: m.pii_fields, rowCount: String(m.row_count),
    metadata: m.metadata, extractionId: m.extraction_id, source: m.source,
    requestId: m.request_id,
    tables: m.tables.map((t) => ({ table: t.table, rowCount: String(t.row_count), verified: t.verified })),
    subjectKind: m.subject_kind,
  };
  for (const [key, at] of [['extractionTimestamp', m.extraction_timestamp], ['startedAt', m.started_at], ['finishedAt', m.finished_at]]) {
    if (at) out[key] = timestamp(at);
  }
  if (m.compliance_tag !== undefined && m.compliance_tag !== null) out.complianceTag = m.compliance_tag;
  return out;
}

function extractOnce(client, args, value, metadata, deadline) {
  return new Promise((resolve, reject) => {
    let pkg;
    try { pkg = new Package(args.out); } catch (e) { reject(e); return; }
    const fail = (error) => { pkg.discard(); reject(error); };
    const call = client.Extract({
      source: args.source,
      subject: { kind: args.kind, value },
      request_id: args.requestId,
      compliance_tag: args.complianceTag,
    }, metadata, { deadline });
    let manifest = null;
    call.on('data', (message) => {
      try {
        switch (message.event) {
          case 'started': pkg.start(message.started); break;
          case 'batch': pkg.batch(message.batch); break;
          case 'table_completed': pkg.completed(message.table_completed); break;
          case 'manifest': manifest = message.manifest; pkg.finish(manifest); break;
          default: break; // table_started: progress, not needed here
        }
      } catch (e) { call.cancel(); fail(e); }
    });
    call.on('error', (error) => { if (!manifest) fail(error); });
    call.on('end', () => {
      if (manifest) resolve(manifest); else fail(new Error('the stream ended without a manifest'));
    });
  });
}

// One Erase call: a preview when `digest` is null, else the erasure that the preview's digest
// confirms. Resolves with the receipt.
function eraseOnce(client, args, value, metadata, deadline, digest) {
  return new Promise((resolve, reject) => {
    const call = client.Erase({
      source: args.source,
      subject: { kind: args.kind, value },
      request_id: args.requestId,
      compliance_tag: args.complianceTag,
      dry_run: digest === null,
      preview_digest: digest || '',
    }, metadata, { deadline });
    let receipt = null;
    call.on('data', (message) => { if (message.event === 'receipt') receipt = message.receipt; });
    call.on('error', reject);
    call.on('end', () => {
      if (receipt) resolve(receipt); else reject(new Error('the stream ended without a receipt'));
    });
  });
}

// Erases one subject: the preview, then the erasure confirmed by its digest.
async function erase(client, args, value, metadata, deadline) {
  const preview = await eraseOnce(client, args, value, metadata, deadline, null);
  const show = (receipt, prefix) => {
    for (const t of receipt.tables) {
      const action = String(t.action).replace('ERASURE_ACTION_', '').toLowerCase();
      process.stderr.write(`${prefix}${action} ${t.table}: ${t.rows} row(s)\n`);
    }
  };
  show(preview, 'would ');
  const receipt = await eraseOnce(client, args, value, metadata, deadline, preview.preview_digest);
  show(receipt, '');
  return receipt;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const value = args.value !== undefined ? args.value : process.env[args.valueEnv || ''];
  if (!value) throw new Error('give the identity with --value or --value-env');

  const definition = protoLoader.loadSync('dsr/v1/dsr.proto', {
    includeDirs: [path.join(ROOT, 'proto')],
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const dsr = grpc.loadPackageDefinition(definition).dsr.v1;
  const client = new dsr.DsrConnectorService(args.addr, grpc.credentials.createInsecure());

  const metadata = new grpc.Metadata();
  metadata.set('x-request-id', args.requestId);
  if (args.tokenEnv) metadata.set('authorization', `Bearer ${process.env[args.tokenEnv]}`);
  const deadline = Date.now() + args.deadline * 1000;
  let delay = 500;
  try {
    for (let attempt = 1; attempt <= args.attempts; attempt += 1) {
      try {
        if (args.erase) {
          const r = await erase(client, args, value, metadata, deadline);
          console.log(`erased: ${r.rows_deleted} deleted, ${r.rows_masked} masked, ${r.rows_retained} retained (erasure ${r.erasure_id}, receipt sha256 ${r.receipt_sha256})`);
          return 0;
        }
        const manifest = await extractOnce(client, args, value, metadata, deadline);
        console.log(`${args.out}: ${manifest.row_count} row(s), every count verified (extraction ${manifest.extraction_id})`);
        return 0;
      } catch (error) {
        if (error.code === undefined) throw error;
        if (error.code === Status.UNAVAILABLE && attempt < args.attempts) {
          const pushback = Number(error.metadata?.get('grpc-retry-pushback-ms')[0] || 0);
          const wait = Math.max(delay, pushback) * (1 + Math.random() / 4); // jitter
          if (Date.now() + wait < deadline) {
            process.stderr.write(`attempt ${attempt}: UNAVAILABLE (${error.details}); again in ${(wait / 1000).toFixed(1)}s\n`);
            await sleep(wait);
            delay = Math.min(delay * 2, 30000);
            continue;
          }
        }
        const [code, advice] = STOP[error.code] || [1, 'unexpected'];
        const done = args.erase ? 'nothing was erased' : 'nothing was written';
        process.stderr.write(`error: ${Status[error.code]}: ${error.details} (${advice}); ${done}\n`);
        return code;
      }
    }
    return 5;
  } finally {
    client.close();
  }
}

main().then((code) => { process.exitCode = code; }, (error) => {
  process.stderr.write(`error: ${error.message}\n`);
  process.exitCode = 1;
});
