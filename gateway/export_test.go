package gateway

// BlockMessage exposes blockMessage to the tests.
var BlockMessage = blockMessage

// VCSModulePath exposes vcsModulePath to the tests.
var VCSModulePath = vcsModulePath

// PeekClientHello exposes peekClientHello to the fuzz target.
var PeekClientHello = peekClientHello

// Redacted exposes redacted to the tests.
var Redacted = redacted
