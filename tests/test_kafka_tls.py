"""SASL_SSL with the CA from Vault: a service's Kafka settings, as the pod gets them (the CA file the Vault agent
renders), reach a real broker's TLS listener and refuse one whose certificate another CA signed."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from app.settings import KafkaSettings, SettingsError
from scripts.servers import KAFKA_ADMIN_PASSWORD, KAFKA_ADMIN_USER, KafkaBroker
from scripts.tls_material import make_ca


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-tls"), tls=True)
    broker.start()
    yield broker
    broker.stop()


def settings(broker: KafkaBroker, ca_file) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap_servers=broker.tls_bootstrap, kafka_security_protocol="SASL_SSL",
                         kafka_sasl_mechanism="SCRAM-SHA-256", kafka_username=KAFKA_ADMIN_USER,
                         kafka_password=KAFKA_ADMIN_PASSWORD, kafka_ssl_ca_location=str(ca_file))


def test_a_service_talks_to_the_broker_over_tls_with_the_vault_ca(tls_broker):
    config = settings(tls_broker, tls_broker.tls_ca).client_config()
    assert config["security.protocol"] == "SASL_SSL" and config["ssl.ca.location"] == str(tls_broker.tls_ca)
    metadata = AdminClient(config).list_topics(timeout=20)
    assert metadata.brokers  # handshake, certificate and SCRAM login all passed
    producer = Producer(config | {"message.timeout.ms": 10000})
    producer.produce("__tls_probe_absent", b"x")  # no topic: the send fails, the connection does not
    producer.flush(5)


def test_a_broker_signed_by_another_ca_is_refused(tls_broker, tmp_path):
    _, other = make_ca("not the brokers' CA")
    wrong = tmp_path / "other-ca.pem"
    wrong.write_bytes(other.pem)
    with pytest.raises(KafkaException):
        AdminClient(settings(tls_broker, wrong).client_config()).list_topics(timeout=8)


def test_sasl_ssl_without_a_ca_file_is_a_settings_error():
    with pytest.raises(SettingsError, match="KAFKA_SSL_CA_LOCATION"):
        KafkaSettings(kafka_bootstrap_servers="b:9093", kafka_security_protocol="SASL_SSL", kafka_username="u",
                      kafka_password="p").client_config()
