// Times the IAB libraries on the strings of `cargo bench -p assent-tcf --bench tcf` (which
// writes them to target/tcf-bench-strings.txt), one core: decodes per second with
// @iabtechlabtcf/core (`TCString.decode`), encodes per second with @iabgpp/cmpapi (`TcfEuV2`,
// whose bytes our encoder matches; @iabtechlabtcf/core cannot encode without a GVL fetched
// from the network).
// Usage: node crates/assent-tcf/tests/differential/bench.cjs [target/tcf-bench-strings.txt]
'use strict';
const fs = require('fs');
const path = require('path');
const { TCString } = require('@iabtechlabtcf/core');
const { TcfEuV2 } = require('@iabgpp/cmpapi');

const file = process.argv[2] || path.join(__dirname, '../../../../target/tcf-bench-strings.txt');
const lines = fs.readFileSync(file, 'utf8').trim().split('\n');

function rate(fn) {
  // Warm up, then run for about 3 seconds.
  for (let i = 0; i < 2000; i++) fn();
  let n = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0n;
  while (elapsed < 3_000_000_000n) {
    for (let i = 0; i < 1000; i++) fn();
    n += 1000;
    elapsed = process.hrtime.bigint() - start;
  }
  return n / (Number(elapsed) / 1e9);
}

for (const line of lines) {
  const [vendors, s] = line.split(' ');
  const decodes = rate(() => TCString.decode(s));
  // A full encode from the fields, as ours does: a fresh section each time (a section that
  // only had one field changed re-encodes incrementally from cached field bits).
  const fields = Object.entries(new TcfEuV2(s).toObj());
  const encodes = rate(() => {
    const section = new TcfEuV2();
    for (const [k, v] of fields) section.setFieldValue(k, v);
    return section.encode();
  });
  console.log(JSON.stringify({
    decoder: '@iabtechlabtcf/core',
    encoder: '@iabgpp/cmpapi',
    vendors: Number(vendors),
    chars: s.length,
    decodes_per_s: Math.round(decodes),
    decode_ns: Math.round(1e9 / decodes),
    encodes_per_s: Math.round(encodes),
    encode_ns: Math.round(1e9 / encodes),
  }));
}
