"""Every method of the official SDK's Control Plane surface (tensormesh==0.2.1, on-demand
methods included) against our running server: each call must succeed with real data or get
the documented clear error (the Stripe routes: 501, no payment processor). The list of
methods is read from the SDK itself, so a method this test does not call fails it.

Usage: python check_sdk_surface.py PATH/TO/tensormesh [MODEL]
"""

import inspect
import os
import subprocess
import sys
import time

import tensormesh

sys.path.insert(0, os.path.dirname(__file__))
from check_clients import check, report, start_server  # noqa: E402
from cli_parity import login_tokens  # noqa: E402

called = set()


def sdk_methods(root, path="cp"):
    """Dotted paths of every public method under the control-plane client."""
    out, seen = set(), set()

    def walk(obj, p):
        for name in dir(obj):
            if name.startswith("_"):
                continue
            value = getattr(obj, name)
            if inspect.ismethod(value):
                out.add(f"{p}.{name}")
            elif type(value).__module__.startswith("tensormesh") and id(value) not in seen:
                seen.add(id(value))
                walk(value, f"{p}.{name}")

    walk(root, path)
    return out


def use(name, result):
    called.add(name)
    return result


def main():
    server_bin = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "gemma-3-270m"
    proc, _base, control, data_dir = start_server(server_bin, model, None)
    try:
        run(server_bin, control, model, data_dir)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    report()


def run(server_bin, control, model, data_dir):
    token = login_tokens(control)["access_token"]
    client = tensormesh.Tensormesh(control_plane_token=token, control_plane_base_url=control, enable_on_demand=True)
    cp = client.control_plane
    made = subprocess.run([server_bin, "user", "--data-dir", data_dir, "create", "--email", "surface@example.com",
                           "--password", "surface-password-1"], capture_output=True, text=True, check=True)
    other = made.stdout.split("(")[1].split(",")[0]
    me = use("cp.users.get_auth_profile", cp.users.get_auth_profile()).id

    @check("sdk surface: users and API keys")
    def _():
        assert use("cp.users.accept_tos", cp.users.accept_tos()).tos_accepted_at
        use("cp.users.update", cp.users.update(me, company="Surface Inc"))
        key = use("cp.users.api_keys.create", cp.users.api_keys.create(user_id=me, name="surface"))
        assert any(k.name == "surface" for k in use("cp.users.api_keys.list", cp.users.api_keys.list()))
        use("cp.users.api_keys.delete", cp.users.api_keys.delete(api_key=key.id))

    @check("sdk surface: billing (balance, spending, usage, transactions, address, GPU and serverless prices)")
    def _():
        assert use("cp.billing.balance.get", cp.billing.balance.get()).units is not None
        use("cp.billing.spending.history", cp.billing.spending.history())
        use("cp.billing.spending.summary", cp.billing.spending.summary())
        use("cp.billing.spending.usage_history", cp.billing.spending.usage_history(bucket="day"))
        assert use("cp.billing.transactions.list", cp.billing.transactions.list()).transactions
        assert list(use("cp.billing.transactions.auto_paging_iter", cp.billing.transactions.auto_paging_iter()))
        use("cp.billing.address.update", cp.billing.address.update(address={"line1": "1 Main St", "country": "FR"}))
        assert use("cp.billing.address.get", cp.billing.address.get()).line1 == "1 Main St"
        assert [p.model for p in use("cp.billing.pricing.serverless.list", cp.billing.pricing.serverless.list())]
        gpu = {"gpuType": "GPU_TYPE_H100", "cloudProvider": "CLOUD_PROVIDER_NEBIUS", "hourlyRate": 2}
        use("cp.admin.billing.pricing.gpu.create", cp.admin.billing.pricing.gpu.create(pricing=gpu))
        use("cp.admin.billing.pricing.gpu.update", cp.admin.billing.pricing.gpu.update(pricing={**gpu, "isActive": False}))
        use("cp.admin.billing.pricing.gpu.upsert", cp.admin.billing.pricing.gpu.upsert(pricing={**gpu, "isActive": True}, method="PUT"))
        assert len(use("cp.billing.pricing.gpu.list", cp.billing.pricing.gpu.list(active_only=True))) == 1
        use("cp.admin.billing.pricing.gpu.delete", cp.admin.billing.pricing.gpu.delete("GPU_TYPE_H100",
                                                                                       "CLOUD_PROVIDER_NEBIUS"))
        assert cp.billing.pricing.gpu.list() == []

    @check("sdk surface: Stripe routes answer the documented 501 (no payment processor)")
    def _():
        s = cp.billing.stripe
        for name, call in (
                ("cp.billing.stripe.customer.get_or_create", lambda: s.customer.get_or_create()),
                ("cp.billing.stripe.payment_methods.list", lambda: s.payment_methods.list()),
                ("cp.billing.stripe.payment_methods.attach", lambda: s.payment_methods.attach(stripe_payment_method_id="pm_1")),
                ("cp.billing.stripe.payment_methods.detach", lambda: s.payment_methods.detach("pm_1")),
                ("cp.billing.stripe.payment_intents.create", lambda: s.payment_intents.create(amount=10.5)),
                ("cp.billing.stripe.payment_intents.confirm", lambda: s.payment_intents.confirm(stripe_payment_intent_id="pi_1")),
                ("cp.billing.stripe.setup_intents.create", lambda: s.setup_intents.create())):
            try:
                call()
            except tensormesh.APIStatusError as e:
                assert e.status_code == 501 and "no payment processor" in str(e), (name, e)
                called.add(name)
            else:
                raise AssertionError(f"{name} succeeded")

    @check("sdk surface: admin (users, balances, spending, serverless prices, products)")
    def _():
        a = cp.admin
        assert use("cp.admin.users.list", a.users.list(page=1, size=1)).users
        assert len(list(use("cp.admin.users.auto_paging_iter", a.users.auto_paging_iter(size=1)))) >= 2
        role = use("cp.admin.users.change_role", a.users.change_role(target_user_id=other, target_user_role="USER_ROLE_ADMIN"))
        assert role.user_role == "USER_ROLE_ADMIN"
        use("cp.admin.billing.balances.add", a.billing.balances.add(target_user_id=other, amount=5))
        balances = use("cp.admin.billing.balances.get", a.billing.balances.get(target_user_ids=[other]))
        assert balances
        use("cp.admin.billing.spending.summary", a.billing.spending.summary(target_user_ids=[me, other]))
        p = a.billing.pricing.serverless
        price = {"model": "surface/m", "inputTokenPrice": {"units": "1"}, "outputTokenPrice": {"units": "2"}}
        row = use("cp.admin.billing.pricing.serverless.create", p.create(pricing=price))
        use("cp.admin.billing.pricing.serverless.update", p.update(pricing={"id": row.id, "name": "Surface"}))
        use("cp.admin.billing.pricing.serverless.upsert", p.upsert(pricing={"id": row.id, "isActive": False}, method="PUT"))
        assert use("cp.admin.billing.pricing.serverless.list", p.list(model="surface/m"))[0].name == "Surface"
        use("cp.admin.billing.pricing.serverless.delete", p.delete(row.id))
        product = use("cp.admin.products.upsert", a.products.upsert(product={"name": "Surface GPU", "requiredGpuNum": 1}))
        assert any(x.id == product.id for x in use("cp.admin.products.list", a.products.list()))
        assert any(x.id == product.id for x in use("cp.products.list", cp.products.list()))
        use("cp.products.delete", cp.products.delete(product.id))

    @check("sdk surface: support, reserved deployments, activities")
    def _():
        t = cp.support.tickets
        ticket = use("cp.support.tickets.create", t.create(subject="Surface", message="Hello"))
        use("cp.support.tickets.add_message", t.add_message(ticket.ticket_id, message="More"))
        assert len(use("cp.support.tickets.get", t.get(ticket.ticket_id)).conversations) == 2
        assert use("cp.support.tickets.list", t.list(status="TICKET_STATUS_OPEN")).tickets
        assert list(use("cp.support.tickets.auto_paging_iter", t.auto_paging_iter(size=1)))
        assert use("cp.support.tickets.close", t.close(ticket.ticket_id)).status == "TICKET_STATUS_CLOSED"
        submitted = cp.support.reserved_deployments.submit(company="Surface", preferred_gpu="GPU_TYPE_H100")
        assert use("cp.support.reserved_deployments.submit", submitted).request_id
        page = use("cp.activities.list", cp.activities.list(resource_type="ticket"))
        assert [x.action for x in page.activities][:3] == ["ticket.closed", "ticket.message_added", "ticket.opened"]
        assert use("cp.activities.get", cp.activities.get(page.activities[0].activity_id)).action == "ticket.closed"
        assert len(list(use("cp.activities.auto_paging_iter", cp.activities.auto_paging_iter(size=3)))) > 10

    @check("sdk surface: models (deploy, list, get, validate, search, check, chat, logs, metrics, delete)")
    def _():
        m = cp.models
        deployed = use("cp.models.deploy", m.deploy(model_name="surface-model", model_path=model, user_id=me,
                                                    infra={"cloudProvider": "CLOUD_PROVIDER_NEBIUS"}))
        mid = deployed.model_id
        assert use("cp.models.get", m.get(mid)).status == "MODEL_STATUS_UP"
        assert [x.model_id for x in use("cp.models.list", m.list())] == [mid]
        assert use("cp.models.validate_name", m.validate_name(model_name="surface-model")).is_valid is False
        found = use("cp.models.search_by_infra", m.search_by_infra(infra={"cloudProvider": "CLOUD_PROVIDER_NEBIUS"}))
        assert [x.model_id for x in found] == [mid]
        checked = use("cp.models.check", m.check(model_id=mid))
        assert checked.required_gpu_memory_gib > checked.required_lm_cache_memory_gib > 0
        assert use("cp.models.chat", m.chat(mid, body="Say hello.")).response
        # The request line is written when the request is settled, moments after the answer.
        for _ in range(50):
            logs = use("cp.observability.deployments.logs.list", cp.observability.deployments.logs.list(mid, limit=5))
            if any("request finished" in line.message for line in logs):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"no request line in {logs}")
        use("cp.observability.deployments.metrics.get", cp.observability.deployments.metrics.get(mid))
        assert use("cp.observability.users.metrics.get", cp.observability.users.metrics.get())[0].name == "requests"
        assert use("cp.admin.models.list", cp.admin.models.list()).models
        assert list(use("cp.admin.models.auto_paging_iter", cp.admin.models.auto_paging_iter()))
        use("cp.models.delete", m.delete(mid))
        second = m.deploy(model_name="surface-model-2", model_path=model, user_id=me)
        use("cp.admin.models.delete", cp.admin.models.delete(second.model_id))
        assert m.list() == []

    @check("sdk surface: the raw request escape hatch, and every SDK method was called")
    def _():
        assert use("cp.request", cp.request("GET", "/v1/products")).status_code == 200
        missing = sdk_methods(cp) - called
        assert not missing, f"not exercised: {sorted(missing)}"


if __name__ == "__main__":
    main()
