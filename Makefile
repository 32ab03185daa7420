# `sam build` (BuildMethod: makefile, built in source: see samconfig.toml) runs
# `make build-<LogicalId>` once per function with ARTIFACTS_DIR set. All six binaries
# come from one cargo invocation (scripts/cargo-lambdas); after the first function it
# is a no-op, so each target only copies its bootstrap.

build-ApiFunction: BIN = flare-api
build-RouterFunction: BIN = flare-router
build-PushFunction: BIN = flare-push
build-SmsFunction: BIN = flare-sms
build-EmailFunction: BIN = flare-email
# Each channel's urgent lane runs the same binary as its normal lane.
build-PushUrgentFunction: BIN = flare-push
build-SmsUrgentFunction: BIN = flare-sms
build-EmailUrgentFunction: BIN = flare-email
build-ReceiptsFunction: BIN = flare-receipts

build-ApiFunction build-RouterFunction build-PushFunction build-SmsFunction build-EmailFunction build-ReceiptsFunction build-PushUrgentFunction build-SmsUrgentFunction build-EmailUrgentFunction:
	scripts/cargo-lambdas --quiet
	cp target/lambda/$(BIN)/bootstrap $(ARTIFACTS_DIR)/bootstrap

.PHONY: build-ApiFunction build-RouterFunction build-PushFunction build-SmsFunction build-EmailFunction build-ReceiptsFunction build-PushUrgentFunction build-SmsUrgentFunction build-EmailUrgentFunction
