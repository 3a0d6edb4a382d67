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

// A table's file name in the package: plain characters kept, anything else replaced, so that
// no name from the server reaches outside it; unique within the package.
function fileName(table, used) {
  let base = Array.from(table).slice(0, 100).map((c) => (/^[A-Za-z0-9_.-]$/.test(c) ? c : '_')).join('');
  if (base === '' || base.startsWith('.')) base = `_${base}`;
  let name = `${base}.jsonl`;
  for (let n = 2; used.has(name); n += 1) name = `${base}-${n}.jsonl`;
  used.add(name);
  return name;
}

const plural = (n, one, many) => (n === 1 ? one : many);

// The package's explanation, for the data subject: the same text as every client's.
function readme(started, tables, m) {
  const source = m.source;
  const kind = m.subject_kind;
  const out = [`Your personal data from "${source}"`, '='.repeat(26 + Array.from(source).length), '',
    `This package holds every record about you that was found in "${source}", looked up by`,
    `your ${kind}. All of it was read from one consistent copy (snapshot) of the database, taken`,
    `at ${timestamp(m.extraction_timestamp)}. For each table, the number of records written here was checked`,
    "against the database's own count in the same snapshot.", '',
    `Request:     ${m.request_id}`,
    `Extraction:  ${m.extraction_id}`,
    `Reference:   ${m.subject_id} (a keyed fingerprint of the identity you gave, not the identity itself)`,
    '', 'Files', '-----', '',
    'manifest.json',
    '    The verified record of this extraction: the tables, their record counts, the',
    '    fields searched and when. It is protobuf JSON (dsr.v1.Manifest).'];
  for (const planned of started.tables) {
    const t = tables.get(planned.table);
    out.push('', t.name,
      `    Table "${planned.table}": ${t.rows} record${plural(t.rows, '', 's')}.${planned.description ? ` ${planned.description}` : ''}`,
      '    One record per line, as a JSON object with these fields:');
    const width = Math.max(0, ...planned.columns.map((c) => Array.from(c.name).length));
    for (const c of planned.columns) {
      const category = c.category === 'not_pii' ? 'not personal data on its own' : c.category;
      out.push(`      ${c.name}${' '.repeat(width - Array.from(c.name).length)}  ${category}`);
    }
    const rejected = t.done ? Number(t.done.rejected_count) : 0;
    if (rejected > 0) {
      out.push(`    ${rejected} more record${plural(rejected, '', 's')} of this table could not be read as declared and ${plural(rejected, 'is', 'are')} not`,
        `    included here; ask us about ${plural(rejected, 'it', 'them')}, quoting the extraction id above.`);
    }
    if (t.done && t.done.pii_fields.length > 0) {
      out.push('    Inside its JSON fields we also found:');
      for (const field of t.done.pii_fields) {
        const at = field.lastIndexOf(':');
        const [where, category] = at < 0 ? [field, ''] : [field.slice(0, at), field.slice(at + 1)];
        out.push(`      ${where}  ${category}`);
      }
    }
  }
  if (started.unreachable_tables.length > 0) {
    out.push('', 'Not searched', '------------', '',
      `These tables cannot be reached from your ${kind}, so they were not searched:`);
    for (const u of started.unreachable_tables) out.push(`  ${u.table}: ${u.reason}`);
  }
  out.push('', 'What the categories mean', '------------------------', '');
  const described = new Map(started.categories.map((c) => [c.name, c.description]));
  for (const name of [...described.keys()].sort()) {
    if (name !== 'not_pii') out.push(`  ${name}: ${described.get(name) || '(no description given)'}`);
  }
  out.push('', 'How values are written', '----------------------', '',
    '  Times are UTC, in ISO 8601 (2024-03-14T09:26:53Z); dates are YYYY-MM-DD.',
    '  Exact decimal numbers (amounts of money, for example) are text, so that no digit is',
    '  lost. Binary data is base64. Nested documents are JSON, as stored. A missing value',
    '  is null.');
  return out.join('\n') + '\n';
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
    const used = new Set();
    for (const t of started.tables) {
      const name = fileName(t.table, used);
      const file = path.join(this.dir, name);
      this.tables.set(t.table, { name, file, fd: fs.openSync(file, 'wx', 0o600), columns: t.columns, rows: 0, done: null });
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
    t.done = done;
    const leftOut = Number(done.rejected_count) > 0 ? ` (${done.rejected_count} left out)` : '';
    process.stderr.write(`${done.table}: ${done.row_count} row(s)${leftOut}, count verified\n`);
  }

  finish(manifest) {
    for (const c of manifest.tables) {
      const t = this.tables.get(c.table);
      if (!c.verified || !t || Number(c.row_count) !== t.rows) {
        throw new Error(`${c.table}: the manifest does not match the stream`);
      }
    }
    privateFile(path.join(this.dir, 'manifest.json'), JSON.stringify(manifestJson(manifest), null, 2) + '\n');
    privateFile(path.join(this.dir, 'README.txt'), readme(this.started, this.tables, manifest));
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
