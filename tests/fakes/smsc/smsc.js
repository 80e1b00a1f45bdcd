'use strict';
/*
 * A test-only SMSC: SMPP 3.4 on the `smpp` npm package, driven by a JSON control API.
 *
 *   node smsc.js --port 0 --control-port 0 [--tls-key key.pem --tls-cert cert.pem]
 *
 * Both listen on 127.0.0.1 (SMPP over TLS when a key and certificate are given); once
 * they do, one line goes to stdout: {"smpp_port": N, "control_port": M}. The process
 * exits on SIGTERM/SIGINT and when its stdin closes, so it dies with whoever started it.
 *
 * Control API (JSON in and out): GET /state; POST /config, /reset, /receipt, /deliver,
 * /drop, /unbind. tests/fakes/fake_smsc.py wraps it and documents the fields.
 */
const fs = require('fs');
const http = require('http');
const smpp = require('smpp');

// The library turns short_message and message_payload into text (or {udh, message})
// according to data_coding. This SMSC wants the octets exactly as they are on the wire,
// in both directions, so those filters go: the fields stay (and are sent as) Buffers.
// validity_period stays its wire text ("000000001000000R": ten minutes), not a Date.
for (const name of Object.keys(smpp.commands)) {
  const params = smpp.commands[name].params || {};
  if (params.short_message) delete params.short_message.filter;
  if (params.validity_period) delete params.validity_period.filter;
}
delete smpp.tlvs.message_payload.filter;

const args = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) {
  args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
}

const MESSAGE_STATES = {DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8};
const MAX_REDELIVERIES = 5;
const WAIT_FOR_RESP_MS = 10000;
// encoding -> [data_coding, octets in a single message, octets of text per concatenated part]
// GSM is sent unpacked (one septet per octet), so it gets the 160/153 septets of the air.
const ENCODINGS = {gsm: [0, 160, 153], ucs2: [8, 140, 134], latin1: [3, 140, 134]};

// GSM 03.38 default alphabet (index = code) and its extension table (reached via 0x1B).
const GSM_BASIC = '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?' +
  '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
const GSM_EXTENDED = {'\f': 0x0a, '^': 0x14, '{': 0x28, '}': 0x29, '\\': 0x2f, '[': 0x3c, '~': 0x3d, ']': 0x3e, '|': 0x40, '€': 0x65};

function defaults() {
  return {
    credentials: null, // {system_id: password}; null accepts anyone
    refuse_bind: false,
    resp_id_format: 'dec', // how submit_sm_resp writes the id: "dec" or "hex"
    errors: [], // [{status, count}]: the next submits get these statuses, in order
    throttle_per_second: null,
    submit_delay_ms: 0,
    drop_after: null, // destroy the socket that brings the Nth submit_sm from now
    redeliver_ms: 500,
    receipts: {mode: 'immediate', delay_ms: 0, stat: 'DELIVRD', err: '000', reorder: false,
               tlv: true, id_format: 'dec', stat_by_destination: {}},
  };
}

let config = defaults();
let records;
let generation = 0; // bumped by /reset: pending redeliveries and batches of the past are dropped
let nextMessageId = 1; // not reset: ids stay unique for the life of the process
let nextSessionId = 1;
let concatRef = 0;
let queue = []; // deliver_sm jobs waiting for a bound receiver
let batch = null; // receipts being gathered to be sent in reverse
const peers = new Map(); // session id -> peer

function clearRecords() {
  records = {binds: [], submits: [], delivers: [], enquire_links: 0, max_outstanding: 0};
}
clearRecords();

const now = () => Date.now() / 1000;
const formatId = (id, format) => (format === 'hex' ? id.toString(16).toUpperCase() : String(id));
const canReceive = (peer) => peer.bound && peer.bind !== 'transmitter';
const addressType = (addr) => (/^\+?\d+$/.test(addr) ? {ton: 1, npi: 1} : {ton: 5, npi: 0});

function stamp(date) { // YYMMDDhhmm, UTC
  const two = (n) => String(n).padStart(2, '0');
  return two(date.getUTCFullYear() % 100) + two(date.getUTCMonth() + 1) + two(date.getUTCDate()) +
    two(date.getUTCHours()) + two(date.getUTCMinutes());
}

// -- sending deliver_sm ------------------------------------------------------------------

// A job is one deliver_sm to get acknowledged: {kind, message_id?, options, prefer,
// attempt, gen, first}. `first` is called once, with the status of the first answer (null
// when the session went away unanswered). A non-zero answer is retried after redeliver_ms;
// a session that closes with the deliver_sm unanswered gets it redelivered elsewhere.
function newJob(kind, options, extra) {
  return Object.assign({kind, options, prefer: null, attempt: 0, gen: generation, first: null}, extra);
}

function settleFirst(job, status) {
  const first = job.first;
  job.first = null;
  if (first) first(status);
}

function dispatch(job) {
  if (job.gen !== generation) return;
  const preferred = peers.get(job.prefer);
  const peer = preferred && canReceive(preferred) ? preferred : [...peers.values()].find(canReceive);
  if (!peer) {
    queue.push(job);
    return;
  }
  job.attempt += 1;
  const o = job.options;
  const entry = {kind: job.kind, session: peer.id, attempt: job.attempt, status: null, time: now(),
                 source_addr: o.source_addr, destination_addr: o.destination_addr, esm_class: o.esm_class,
                 data_coding: o.data_coding, short_message: o.short_message.toString('hex')};
  if ('message_id' in job) entry.message_id = job.message_id;
  records.delivers.push(entry);
  peer.pending.add(job);
  peer.session.deliver_sm({...o}, (resp) => {
    peer.pending.delete(job);
    entry.status = resp.command_status;
    settleFirst(job, resp.command_status);
    if (resp.command_status !== 0) retry(job, config.redeliver_ms);
  });
}

function retry(job, delay) {
  if (job.attempt <= MAX_REDELIVERIES) setTimeout(() => dispatch(job), delay);
}

function flushQueue() {
  const waiting = queue;
  queue = [];
  waiting.forEach(dispatch);
}

// Resolves with the first answer's status, or null when none came in time.
function firstAnswer(job) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => settleFirst(job, null), WAIT_FOR_RESP_MS);
    job.first = (status) => { clearTimeout(timer); resolve(status); };
  });
}

// Sends the jobs now and resolves once each is answered (or not, in time); with no
// receiver bound they all wait in the queue instead and it resolves at once.
async function sendNow(jobs) {
  if (![...peers.values()].some(canReceive)) {
    queue.push(...jobs);
    return {sent: 0, queued: jobs.length, statuses: []};
  }
  const answers = jobs.map(firstAnswer);
  jobs.forEach(dispatch);
  return {sent: jobs.length, queued: 0, statuses: await Promise.all(answers)};
}

// -- receipts ----------------------------------------------------------------------------

// The receipt of `sub` (a submit record): `how` gives stat, err, tlv, id_format, text.
function receiptJob(sub, how) {
  const id = sub.message_id;
  const idText = typeof id === 'number' ? formatId(id, how.id_format) : String(id);
  const sm = Buffer.from(sub.short_message || sub.message_payload || '', 'hex');
  const text = `id:${idText} sub:001 dlvrd:${how.stat === 'DELIVRD' ? '001' : '000'} ` +
    `submit date:${stamp(new Date(sub.time * 1000))} done date:${stamp(new Date())} ` +
    `stat:${how.stat} err:${how.err} text:${how.text ?? receiptText(sm, sub.esm_class, sub.data_coding)}`;
  const options = {
    source_addr_ton: sub.dest_addr_ton, source_addr_npi: sub.dest_addr_npi, source_addr: sub.destination_addr,
    dest_addr_ton: sub.source_addr_ton, dest_addr_npi: sub.source_addr_npi, destination_addr: sub.source_addr,
    esm_class: 0x04, data_coding: 0, short_message: Buffer.from(text, 'ascii'),
  };
  if (how.tlv) {
    options.receipted_message_id = idText;
    options.message_state = MESSAGE_STATES[how.stat] || MESSAGE_STATES.UNKNOWN;
  }
  return newJob('receipt', options, {message_id: id, prefer: sub.session});
}

// The first 20 characters of a submitted text, for the receipt's text: field (printable
// ASCII of a single-octet coding; empty for anything else).
function receiptText(sm, esmClass, dataCoding) {
  const body = esmClass & 0x40 && sm.length ? sm.subarray(sm[0] + 1) : sm;
  if (![0, 1, 3].includes(dataCoding)) return '';
  return body.subarray(0, 20).toString('latin1').replace(/[^\x20-\x7e]/g, '.');
}

// The receipt an accepted submit earns under the current config, or null.
function receiptFor(sub) {
  const rc = config.receipts;
  const stat = (rc.stat_by_destination || {})[sub.destination_addr] || rc.stat;
  const wanted = sub.registered_delivery & 3; // 1: always, 2: on failure only
  if (rc.mode === 'none' || !(wanted === 1 || (wanted === 2 && stat !== 'DELIVRD'))) return null;
  const job = receiptJob(sub, {stat, err: rc.err, tlv: rc.tlv, id_format: rc.id_format});
  return {job, delay: rc.mode === 'delay' ? rc.delay_ms : 0, reorder: rc.reorder};
}

function scheduleReceipt({job, delay, reorder}) {
  if (!reorder) {
    setTimeout(() => dispatch(job), delay);
    return;
  }
  if (!batch) { // gather for `delay`, then send what came, last first
    batch = [];
    const gathered = batch;
    setTimeout(() => {
      if (batch === gathered) batch = null;
      gathered.reverse().forEach(dispatch);
    }, delay);
  }
  batch.push(job);
}

// -- SMPP sessions -----------------------------------------------------------------------

function onBind(peer, pdu) {
  const creds = config.credentials;
  let status = 0;
  if (peer.bound) status = smpp.ESME_RALYBND;
  else if (config.refuse_bind) status = smpp.ESME_RBINDFAIL;
  else if (creds && !Object.hasOwn(creds, pdu.system_id)) status = smpp.ESME_RINVSYSID;
  else if (creds && creds[pdu.system_id] !== pdu.password) status = smpp.ESME_RINVPASWD;
  records.binds.push({session: peer.id, command: pdu.command, system_id: pdu.system_id,
                      system_type: pdu.system_type, ok: status === 0, status, time: now()});
  if (status) {
    peer.session.send(pdu.response({command_status: status}));
    return;
  }
  Object.assign(peer, {bound: true, bind: pdu.command.replace('bind_', ''), system_id: pdu.system_id});
  peer.session.send(pdu.response({system_id: 'MISSIVESIM'}));
  if (canReceive(peer)) flushQueue();
}

function onSubmit(peer, pdu) {
  peer.outstanding += 1;
  peer.max_outstanding = Math.max(peer.max_outstanding, peer.outstanding);
  records.max_outstanding = Math.max(records.max_outstanding, peer.outstanding);
  const reply = (options, then) => {
    const send = () => {
      peer.outstanding -= 1;
      peer.session.send(pdu.response(options), then);
    };
    if (config.submit_delay_ms > 0) setTimeout(send, config.submit_delay_ms);
    else send();
  };
  if (!peer.bound || peer.bind === 'receiver') {
    reply({command_status: smpp.ESME_RINVBNDSTS});
    return;
  }
  const sub = {session: peer.id, system_id: peer.system_id, sequence_number: pdu.sequence_number};
  for (const key of ['service_type', 'source_addr', 'source_addr_ton', 'source_addr_npi', 'dest_addr_ton',
                     'dest_addr_npi', 'destination_addr', 'esm_class', 'data_coding', 'registered_delivery']) {
    sub[key] = pdu[key];
  }
  Object.assign(sub, {short_message: (pdu.short_message || Buffer.alloc(0)).toString('hex'),
                      message_payload: pdu.message_payload ? pdu.message_payload.toString('hex') : null,
                      validity_period: pdu.validity_period || '', tlvs: vendorTlvs(pdu),
                      message_id: null, status: null, time: now()});
  records.submits.push(sub);

  if (config.drop_after != null && --config.drop_after <= 0) {
    config.drop_after = null;
    sub.dropped = true;
    peer.session.destroy();
    return;
  }
  const limit = config.throttle_per_second;
  peer.recent = peer.recent.filter((t) => t > Date.now() - 1000);
  let status = 0;
  if (limit != null && peer.recent.length >= limit) {
    status = smpp.ESME_RTHROTTLED;
  } else if (config.errors.length) {
    status = config.errors[0].status;
    if (--config.errors[0].count <= 0) config.errors.shift();
  }
  sub.status = status;
  if (status) {
    reply({command_status: status});
    return;
  }
  peer.recent.push(Date.now());
  sub.message_id = nextMessageId++;
  const receipt = receiptFor(sub);
  // The receipt is scheduled once the submit_sm_resp is written, so it never overtakes it.
  reply({message_id: formatId(sub.message_id, config.resp_id_format)}, () => receipt && scheduleReceipt(receipt));
}

// TLVs the library has no name for (an SMSC's own, 0x1400-0x3FFF): it keeps each under
// its numeric tag. {"0x1400": "hex of the value"}.
function vendorTlvs(pdu) {
  const tlvs = {};
  for (const key of Object.keys(pdu)) {
    if (/^\d+$/.test(key)) tlvs['0x' + Number(key).toString(16).toUpperCase().padStart(4, '0')] = pdu[key].toString('hex');
  }
  return tlvs;
}

function onSession(session) {
  const peer = {id: nextSessionId++, session, system_id: null, bind: null, bound: false, enquire_links: 0,
                outstanding: 0, max_outstanding: 0, recent: [], pending: new Set()};
  peers.set(peer.id, peer);
  session.on('error', () => session.destroy());
  session.on('close', () => {
    peers.delete(peer.id);
    peer.bound = false;
    for (const job of peer.pending) { // unanswered: deliver again wherever possible
      settleFirst(job, null);
      retry(job, 0);
    }
    peer.pending.clear();
  });
  session.on('pdu', (pdu) => {
    if (pdu.isResponse()) return; // deliver_sm_resp/unbind_resp go to their callbacks
    switch (pdu.command) {
      case 'bind_transceiver': case 'bind_transmitter': case 'bind_receiver':
        return onBind(peer, pdu);
      case 'submit_sm':
        return onSubmit(peer, pdu);
      case 'enquire_link':
        peer.enquire_links += 1;
        records.enquire_links += 1;
        return session.send(pdu.response());
      case 'unbind':
        peer.bound = false;
        return session.send(pdu.response(), () => session.close());
      default:
        return session.send(new smpp.PDU('generic_nack', {
          sequence_number: pdu.sequence_number, command_status: smpp.ESME_RINVCMDID}));
    }
  });
}

// -- mobile-originated messages ----------------------------------------------------------

// The text as a list of per-character octet strings, so parts never split a character.
function encodeChars(text, encoding) {
  const chars = [...text];
  if (encoding === 'gsm') {
    return chars.map((c) => {
      const code = GSM_BASIC.indexOf(c);
      if (code >= 0 && code !== 0x1b) return Buffer.from([code]);
      if (c in GSM_EXTENDED) return Buffer.from([0x1b, GSM_EXTENDED[c]]);
      throw new Error(`${JSON.stringify(c)} is not in the GSM 03.38 alphabet`);
    });
  }
  if (encoding === 'latin1') {
    return chars.map((c) => {
      if (c.codePointAt(0) > 0xff) throw new Error(`${JSON.stringify(c)} is not Latin-1`);
      return Buffer.from(c, 'latin1');
    });
  }
  return chars.map((c) => Buffer.from(c, 'utf16le').swap16()); // ucs2
}

// Splits the octets of the characters into `parts` bodies (or as few as fit).
function split(chars, parts, single, perPart) {
  const size = (list) => list.reduce((n, b) => n + b.length, 0);
  if (!parts) {
    if (size(chars) <= single) return [Buffer.concat(chars)];
    const bodies = [[]];
    for (const c of chars) {
      if (size(bodies[bodies.length - 1]) + c.length > perPart) bodies.push([]);
      bodies[bodies.length - 1].push(c);
    }
    return bodies.map((b) => Buffer.concat(b));
  }
  if (parts > chars.length) throw new Error(`cannot split ${chars.length} characters into ${parts} parts`);
  const bodies = [];
  for (let i = 0; i < parts; i++) {
    const body = chars.slice(Math.floor((i * chars.length) / parts), Math.floor(((i + 1) * chars.length) / parts));
    if (size(body) > (parts > 1 ? perPart : single)) throw new Error(`part ${i + 1} would be too long`);
    bodies.push(Buffer.concat(body));
  }
  return bodies;
}

function deliverMo(body) {
  const encoding = body.encoding || 'gsm';
  if (!(encoding in ENCODINGS)) throw new Error(`unknown encoding ${encoding}`);
  const [dataCoding, single, perPart] = ENCODINGS[encoding];
  const bodies = split(encodeChars(String(body.text ?? ''), encoding), body.parts, single, perPart);
  const src = addressType(body.source_addr), dst = addressType(body.destination_addr);
  const ref = (concatRef = (concatRef + 1) % 256);
  const jobs = bodies.map((octets, i) => newJob('mo', {
    source_addr_ton: src.ton, source_addr_npi: src.npi, source_addr: body.source_addr,
    dest_addr_ton: dst.ton, dest_addr_npi: dst.npi, destination_addr: body.destination_addr,
    esm_class: bodies.length > 1 ? 0x40 : 0, data_coding: dataCoding,
    short_message: bodies.length > 1 ? Buffer.concat([Buffer.from([5, 0, 3, ref, bodies.length, i + 1]), octets]) : octets,
  }));
  return sendNow(body.reverse ? jobs.reverse() : jobs);
}

// -- control API -------------------------------------------------------------------------

function applyConfig(body) {
  const known = new Set([...Object.keys(config), 'next_message_id']);
  const unknown = Object.keys(body).filter((key) => !known.has(key));
  if (unknown.length) throw new Error(`unknown settings: ${unknown.join(', ')}`);
  for (const [key, value] of Object.entries(body)) {
    if (key === 'next_message_id') nextMessageId = value;
    else if (key === 'receipts') Object.assign(config.receipts, value);
    else if (key === 'errors') config.errors = value.map((e) => ({status: e.status, count: e.count ?? 1}));
    else config[key] = value;
  }
}

async function manualReceipt(body) {
  // An id never issued gets a stand-in submit, addressed as the body says (the receipt's
  // own source_addr and destination_addr).
  const sub = records.submits.find((s) => s.message_id === body.message_id) || {
    message_id: body.message_id, time: now(), session: null,
    destination_addr: body.source_addr ?? '447700900000', dest_addr_ton: 1, dest_addr_npi: 1,
    source_addr: body.destination_addr ?? 'Missive', source_addr_ton: 5, source_addr_npi: 0,
  };
  const rc = config.receipts;
  const job = receiptJob(sub, {stat: body.stat || 'DELIVRD', err: body.err || '000', tlv: body.tlv ?? rc.tlv,
                               id_format: body.id_format || rc.id_format, text: body.text});
  const result = await sendNow([job]);
  return {sent: result.sent, queued: result.queued, status: result.statuses[0] ?? null};
}

function state() {
  const all = [...peers.values()];
  return {
    ...records,
    bound: all.filter((p) => p.bound).length,
    queued: queue.length,
    sessions: all.map((p) => ({id: p.id, system_id: p.system_id, bind: p.bind, bound: p.bound,
                               enquire_links: p.enquire_links, max_outstanding: p.max_outstanding})),
    config,
    next_message_id: nextMessageId,
  };
}

const routes = {
  'GET /state': state,
  'POST /config': (body) => { applyConfig(body); return {config}; },
  'POST /reset': () => {
    generation += 1;
    config = defaults();
    clearRecords();
    queue = [];
    batch = null;
    return {ok: true};
  },
  'POST /receipt': manualReceipt,
  'POST /deliver': deliverMo,
  'POST /drop': () => {
    const all = [...peers.values()];
    all.forEach((p) => p.session.destroy());
    return {dropped: all.length};
  },
  'POST /unbind': () => {
    const bound = [...peers.values()].filter((p) => p.bound);
    for (const p of bound) {
      p.bound = false;
      p.session.unbind({}, () => p.session.close());
    }
    return {unbound: bound.length};
  },
};

const control = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', async () => {
    const route = routes[`${req.method} ${req.url.split('?')[0]}`];
    let code = 200, out;
    try {
      const text = Buffer.concat(chunks).toString('utf8');
      if (!route) [code, out] = [404, {error: `no route ${req.method} ${req.url}`}];
      else out = await route(text ? JSON.parse(text) : {});
    } catch (e) {
      [code, out] = [400, {error: String(e && e.message ? e.message : e)}];
    }
    res.writeHead(code, {'content-type': 'application/json'});
    res.end(JSON.stringify(out));
  });
});

// -- start and stop ----------------------------------------------------------------------

const tlsOptions = args['tls-key'] ? {key: fs.readFileSync(args['tls-key']), cert: fs.readFileSync(args['tls-cert'])} : {};
const server = smpp.createServer(tlsOptions, onSession);
let listening = 0;
const ready = () => {
  if (++listening < 2) return;
  process.stdout.write(JSON.stringify({smpp_port: server.address().port, control_port: control.address().port}) + '\n');
};
for (const s of [server, control]) {
  s.on('error', (e) => { process.stderr.write(`fake SMSC: ${e.stack || e}\n`); process.exit(1); });
}
server.listen(Number(args.port || 0), '127.0.0.1', ready);
control.listen(Number(args['control-port'] || 0), '127.0.0.1', ready);

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
