"""Azure Functions entry point (Python v2 model): registers the blueprints, nothing else."""
import azure.functions as func

from functions.full_run_segment import bp as full_run_segment_bp
from functions.graph_webhook import bp as graph_webhook_bp
from functions.status_page import bp as status_page_bp
from functions.submit_worker import bp as submit_worker_bp
from functions.timer_sync import bp as timer_sync_bp
from shared.telemetry import setup_function_app

setup_function_app()  # correlation ids and redaction in every log record; App Insights export when configured
app = func.FunctionApp()
app.register_functions(timer_sync_bp)
app.register_functions(submit_worker_bp)
app.register_functions(full_run_segment_bp)
app.register_functions(graph_webhook_bp)
app.register_functions(status_page_bp)
