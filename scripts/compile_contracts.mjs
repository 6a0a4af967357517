#!/usr/bin/env node
// Compiles contracts/*.sol with the pinned solc from npm and writes one JSON
// artifact per contract into the Python package, so `pip install a402` never
// needs Node. With --check it compiles into memory and exits 1 if any committed
// artifact differs: the test suite runs that to prove the artifacts are the
// sources' own.
import fs from 'node:fs'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const solc = require('solc')

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const sourceDir = path.join(root, 'contracts')
const outDir = path.join(root, 'src', 'a402', 'chain', 'artifacts')
const check = process.argv.includes('--check')

const SETTINGS = {
  optimizer: { enabled: true, runs: 10000 },
  evmVersion: 'cancun',
  viaIR: false,
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
}

function findImport(importPath) {
  const candidates = [path.join(root, 'node_modules', importPath), path.join(sourceDir, importPath)]
  for (const file of candidates) {
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, 'utf8') }
  }
  return { error: `not found: ${importPath}` }
}

const sources = {}
for (const name of fs.readdirSync(sourceDir).filter((f) => f.endsWith('.sol')).sort()) {
  sources[name] = { content: fs.readFileSync(path.join(sourceDir, name), 'utf8') }
}

// Sources compiled with settings of their own (their artifacts come from that run): the IR
// pipeline fits A402Vault under the 24,576 bytes a contract may have, with room to grow, and
// TransferProver's receipt reading in the stack.
const OWN_SETTINGS = {
  'A402Vault.sol': { ...SETTINGS, viaIR: true },
  'TransferProver.sol': { ...SETTINGS, viaIR: true },
}

function compile(settings, files) {
  const input = Object.fromEntries(files.map((f) => [f, sources[f]]))
  const output = JSON.parse(
    solc.compile(JSON.stringify({ language: 'Solidity', sources: input, settings }), { import: findImport }),
  )
  const errors = (output.errors || []).filter((e) => e.severity === 'error')
  for (const e of output.errors || []) console.error(e.formattedMessage)
  if (errors.length) process.exit(1)
  const found = {}
  for (const [file, contracts] of Object.entries(output.contracts)) {
    if (!files.includes(file)) continue // imports are compiled into what uses them
    for (const [name, c] of Object.entries(contracts)) {
      if (!c.evm.bytecode.object) continue // interfaces and abstract contracts
      found[name] = {
        contractName: name,
        sourceName: `contracts/${file}`,
        compiler: { name: 'solc', version: solc.version(), settings },
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
      }
    }
  }
  return found
}

const artifacts = compile(
  SETTINGS,
  Object.keys(sources).filter((f) => !(f in OWN_SETTINGS)),
)
for (const [file, settings] of Object.entries(OWN_SETTINGS)) Object.assign(artifacts, compile(settings, [file]))

let stale = []
for (const [name, artifact] of Object.entries(artifacts)) {
  const file = path.join(outDir, `${name}.json`)
  const text = JSON.stringify(artifact, null, 1) + '\n'
  if (check) {
    if (!fs.existsSync(file) || fs.readFileSync(file, 'utf8') !== text) stale.push(name)
  } else {
    fs.mkdirSync(outDir, { recursive: true })
    fs.writeFileSync(file, text)
  }
}
if (check) {
  const committed = fs.existsSync(outDir) ? fs.readdirSync(outDir).filter((f) => f.endsWith('.json')) : []
  for (const f of committed) if (!(f.replace(/\.json$/, '') in artifacts)) stale.push(`${f} (no source)`)
  if (stale.length) {
    console.error(`artifacts differ from a fresh compile: ${stale.join(', ')}`)
    process.exit(1)
  }
  console.log(`${Object.keys(artifacts).length} artifacts match their sources`)
} else {
  console.log(`wrote ${Object.keys(artifacts).length} artifacts to ${path.relative(root, outDir)}`)
}
