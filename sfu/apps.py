from django.apps import AppConfig


class SfuConfig(AppConfig):
    name = "sfu"
    verbose_name = "WebRTC SFU"

    def ready(self) -> None:
        from django.conf import settings

        from .aiortc_hooks import h264_profiles_register, ice_restrict
        from .signaling import handlers_register

        h264_profiles_register()
        ports = (settings.RTC_MIN_PORT, settings.RTC_MAX_PORT) if settings.RTC_MIN_PORT else None
        ice_restrict(settings.RTC_LISTEN_IPS, consent_interval=settings.RTC_PEER_TIMEOUT / 3,
                     consent_failures=3, ports=ports)
        handlers_register()
